"""The self-contained HTML report of one or more audited runs.

    from finemem.report.html import write_report
    path = write_report(["runs/demo"])            # -> runs/demo/report/index.html
    path = write_report(["runs/a", "runs/b"])     # -> runs/a/report/compare.html (+ each index)

One static file: plots inlined as base64 PNG, no script or style from elsewhere, no network.
Each registered section (`finemem.report.sections`) renders its own Jinja2 template with
autoescape, so every string that comes from a dataset or a model is escaped; a Content
Security Policy lets only the page's own small script run (it records script errors into the
page, which the browser test reads back). Reads the results stores only, never a model.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from finemem.errors import UserError
from finemem.io import write_text_atomic
from finemem.report.sections import RunData, sections
from finemem.report.sections._common import interval, num

# The page's only script: records uncaught errors and what loaded into <body data-...>, so a
# headless browser's --dump-dom shows them (tests/test_report.py).
SCRIPT = """(function () {
  var errors = [];
  window.addEventListener("error", function (e) { errors.push(String(e.message || e.type)); }, true);
  window.addEventListener("load", function () {
    var plots = document.querySelectorAll("img.plot"), ok = 0;
    for (var i = 0; i < plots.length; i++) { if (plots[i].complete && plots[i].naturalWidth > 0) ok++; }
    document.body.setAttribute("data-errors", JSON.stringify(errors));
    document.body.setAttribute("data-plots", plots.length + "/" + ok);
    document.body.setAttribute("data-ready", "1");
  });
})();"""

GRID_MACRO = """{% macro grid(g) -%}
<table class="data"><caption>{{ g.title }}</caption>
<thead><tr>{% for h in g.headers %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>{% for r in g.rows %}<tr>{% for c in r %}<td{% if not loop.first %} class="num"{% endif %}>{{ c }}</td>{% endfor %}</tr>{% endfor %}</tbody>
</table>
{% for n in g.notes %}<p class="note">{{ n }}</p>{% endfor %}
{%- endmacro %}
"""

PAIR_MACRO = """{% macro pair(p) -%}
<div class="pair"><div class="prompt">{{ p.prompt }}</div>
<div class="lbl">generated{% if p.exact %} (exact){% endif %}</div><div class="lbl">true suffix ({{ "%.0f" | format(100 * p.matched_fraction) }}% matched)</div>
<pre class="generated" title="generated">{% for t, m in p.generated %}{% if m %}<mark>{{ t }}</mark>{% else %}{{ t }}{% endif %}{% endfor %}</pre>
<pre class="reference" title="true suffix">{% for t, m in p.reference %}{% if m %}<mark>{{ t }}</mark>{% else %}{{ t }}{% endif %}{% endfor %}</pre>
</div>
{%- endmacro %}
"""


def _env() -> Environment:
    env = Environment(loader=PackageLoader("finemem.report", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = num
    env.filters["interval"] = interval
    return env


def _render_section(env: Environment, spec, data) -> Markup | None:
    ctx = spec.fn(data)
    if ctx is None:
        return None
    tmpl = env.from_string(PAIR_MACRO + GRID_MACRO + spec.template)
    return Markup(tmpl.render(**ctx))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _block(env: Environment, run: RunData, prefix: str) -> list[dict]:
    out = []
    for spec in sections("run"):
        html = _render_section(env, spec, run)
        if html is not None:
            out.append({"name": spec.name, "title": spec.title, "html": html,
                        "id": f"{prefix}{spec.name}"})
    return out


def render_report(run_dirs: list[str | Path]) -> str:
    """The report page of `run_dirs` as a string (one run, or the comparison of several)."""
    from finemem import __version__

    if not run_dirs:
        raise UserError("give at least one run folder", field="RUN_DIR")
    env = _env()
    runs = [RunData.open(d) for d in run_dirs]
    try:
        blocks = []
        if len(runs) > 1:
            comp = []
            for spec in sections("compare"):
                html = _render_section(env, spec, runs)
                if html is not None:
                    comp.append({"name": spec.name, "title": spec.title, "html": html,
                                 "id": spec.name})
            blocks.append({"run": None, "anchor": "compare", "sections": comp})
        for i, run in enumerate(runs, 1):
            prefix = f"run-{i}-" if len(runs) > 1 else ""
            blocks.append({"run": run.name, "anchor": f"run-{i}",
                           "sections": _block(env, run, prefix)})
        digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
        title = (f"finemem report: {runs[0].name}" if len(runs) == 1 else
                 f"finemem report: {len(runs)} runs compared")
        return env.get_template("page.html").render(
            title=title, blocks=blocks, script=SCRIPT, script_hash=f"sha256-{digest}",
            version=__version__, run_dirs=[str(r.run_dir) for r in runs])
    finally:
        for r in runs:
            r.close()


def write_report(run_dirs: list[str | Path], out: str | Path | None = None) -> Path:
    """Write the report and return its path. One run: RUN_DIR/report/index.html. Several:
    each run's own index.html, and the comparison page at `out` (default:
    FIRST_RUN/report/compare.html). `out` is relative to the first run folder; a path that
    leaves it (`../x`) is refused."""
    run_dirs = [Path(d) for d in run_dirs]
    for d in run_dirs:
        if not d.is_dir():
            raise UserError("run folder not found", source=str(d))
    if out is not None:  # relative to the (first) run folder, and never outside it
        from finemem.io import inside

        out = inside(run_dirs[0], out)
    if len(run_dirs) == 1:
        target = Path(out) if out else run_dirs[0] / "report" / "index.html"
        _write(target, render_report(run_dirs))
        return target
    for d in run_dirs:
        _write(d / "report" / "index.html", render_report([d]))
    target = Path(out) if out else run_dirs[0] / "report" / "compare.html"
    _write(target, render_report(run_dirs))
    return target


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
