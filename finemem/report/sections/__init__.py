"""Sections of the HTML report (`finemem report`): one module per section in this package.

    from finemem.report.sections import register_section, RunData

Each probe contributes its own section, so a new probe adds a section without touching the
others. A section is a function of one audited run's stored results (never a model) that
returns the context of its template, or None when the run has no data for it (the section is
then left out). The package imports its modules itself (modules starting with "_" are helpers).

How to add a section — one file here, e.g. `finemem/report/sections/extraction.py`:

```python
from finemem.report.sections import register_section

TEMPLATE = '''
<p>{{ n }} training examples probed.</p>
<table class="data">{% for r in rows %}<tr><td>{{ r.name }}</td>
  <td class="num">{{ r.value | num }}</td></tr>{% endfor %}</table>
<img class="plot" alt="extraction ratio per category" src="{{ plot }}">
{% for p in pairs %}{{ pair(p) }}{% endfor %}
'''

@register_section("extraction", title="Extraction", order=30, template=TEMPLATE)
def extraction(run):                        # run: RunData
    rows = run.metric_rows(name="exact_greedy_extractable")
    if not rows:
        return None                         # no results: the section is left out
    fig = ...                               # a matplotlib figure
    return {"n": len(rows), "rows": rows, "plot": figure_data_uri(fig),
            "pairs": [matched_pair(prefix, generated, true_suffix) for ...]}
```

Rules:
- The template is Jinja2 with autoescape on: every string from a dataset or a model is escaped
  wherever it is printed. Never build HTML by concatenating strings and never mark data
  `|safe`. Plots are inlined (`figure_data_uri` in `finemem.report.plots`: a base64 PNG) so
  the page needs no other file and no network.
- Templates get these helpers: filters `num` (3 significant digits, '-' for None/NaN),
  `interval` (a stored row -> "0.81 [0.71, 0.89] n=32"), and the macro `pair(p)` that shows a
  generation beside its true suffix with the matched spans highlighted
  (`p = matched_pair(prefix, generated, reference)` from `finemem.report.sections._common`).
- `RunData` (`_common.py`) gives the run folder, config, store, summary (None when the stage
  summary cannot be drawn), every stored per-checkpoint metric (`metric_rows`), per-example
  values (`example_values`) and cached generations (`generations`).
- A comparison section (several runs) is registered with `scope="compare"` and receives the
  list of `RunData`.
- `tests/test_report.py` renders every registered section in headless Chromium.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from finemem.registry import import_modules
from finemem.report.sections._common import RunData, matched_pair  # noqa: F401


@dataclass(frozen=True)
class SectionSpec:
    name: str
    title: str
    order: int
    template: str
    fn: Callable
    scope: str  # "run" | "compare"
    probes: tuple[str, ...] = ()  # the probes whose results it shows
    terminal: Callable | None = None  # terminal(run, console) -> bool: the headline printed
                                      # after `finemem audit --probes <one of probes>`


SECTIONS: dict[str, SectionSpec] = {}


def register_section(name: str, *, title: str, order: int = 50, template: str,
                     scope: str = "run", probes: tuple[str, ...] = (),
                     terminal: Callable | None = None):
    """Register a report section: `fn(run) -> dict | None` (scope "run") or
    `fn(runs) -> dict | None` (scope "compare"); `template` is its Jinja2 text. A probe's
    section names the probe(s) in `probes` and gives `terminal(run, console) -> bool`, its
    headline in the terminal (False when the run has nothing to show)."""
    if scope not in ("run", "compare"):
        raise ValueError(f"section '{name}': scope must be 'run' or 'compare'")

    def deco(fn):
        if name in SECTIONS and SECTIONS[name].fn is not fn:
            raise ValueError(f"report section '{name}' is registered twice")
        SECTIONS[name] = SectionSpec(name, title, order, template, fn, scope, tuple(probes),
                                     terminal)
        return fn
    return deco


def load_sections() -> None:
    """Import every section module of this package (idempotent)."""
    import_modules(__name__)


def sections(scope: str = "run") -> list[SectionSpec]:
    load_sections()
    return sorted((s for s in SECTIONS.values() if s.scope == scope),
                  key=lambda s: (s.order, s.name))


def print_probe_summaries(run_dir, probes: list[str], console=None) -> list[str]:
    """Print the terminal headline of every section that shows one of `probes`, in report
    order; returns the sections printed."""
    from rich.console import Console

    console = console or Console()
    shown = []
    run = RunData.open(run_dir)
    try:
        for spec in sections("run"):
            if spec.terminal is not None and set(spec.probes) & set(probes):
                if spec.terminal(run, console):
                    shown.append(spec.name)
                    console.print("")
    finally:
        run.close()
    return shown


__all__ = ["SECTIONS", "print_probe_summaries", "RunData", "SectionSpec", "load_sections", "matched_pair",
           "register_section", "sections"]
