"""Report section: what the run is (model, method, checkpoints, probes run) and the checkpoint
to ship with the reasons."""

from __future__ import annotations

import time

from finemem.report.sections import register_section

TEMPLATE = """
<table class="kv">
  <tr><th>run folder</th><td><code>{{ run_dir }}</code></td></tr>
  {% if model %}<tr><th>base model</th><td><code>{{ model }}</code></td></tr>{% endif %}
  {% if method %}<tr><th>fine-tuning</th><td>{{ method }}</td></tr>{% endif %}
  {% if train_source %}<tr><th>training data</th><td><code>{{ train_source }}</code></td></tr>{% endif %}
  <tr><th>checkpoints</th><td>{{ n_checkpoints }} trained{% if n_merges %}, {{ n_merges }} merged{% endif %}</td></tr>
  <tr><th>probes run</th><td>{% for p in probes %}{{ p.name }} on {{ p.where }}{% if not loop.last %}; {% endif %}{% else %}none yet{% endfor %}</td></tr>
</table>
{% if audits %}<table class="data"><thead><tr><th>audit</th><th>probes</th><th>--checkpoints</th>
  <th>checkpoints covered</th></tr></thead><tbody>
{% for a in audits %}<tr><td>{{ a.when }}</td><td>{{ a.probes }}</td><td><code>{{ a.selection }}</code></td>
  <td>{{ a.covered }}</td></tr>{% endfor %}
</tbody></table>{% endif %}
{% if ship %}
<div class="ship"><b>Checkpoint to ship: <code>{{ ship }}</code></b><br>{{ explanation }}</div>
{% elif why_none %}
<p class="note">No recommendation: {{ why_none }}</p>
{% endif %}
"""


@register_section("overview", title="Run", order=0, template=TEMPLATE)
def overview(run):
    cfg = run.config
    where: dict[str, set] = {}  # probe -> checkpoints it is done on (its done-keys)
    for r in run.store.metrics():
        if r["split"] == "*" and r["name"].startswith("done:"):
            where.setdefault(r["name"].split(":", 1)[1], set()).add(r["checkpoint"])
    every = {c["name"] for c in run.checkpoints} | {"step-000000"}
    done = [{"name": p, "where": _names(sorted(cs), every)} for p, cs in sorted(where.items())]
    audits = [{"when": time.strftime("%Y-%m-%d %H:%M", time.localtime(a["started"])),
               "probes": ", ".join(a["probes"]), "selection": a["selection"],
               "covered": _names(a["checkpoints"], every)} for a in run.store.audits()]
    s = run.summary
    return {"run_dir": str(run.run_dir.resolve()),
            "model": getattr(cfg, "model", None),
            "method": cfg.training.method if cfg else None,
            "train_source": cfg.data.train.source if cfg else None,
            "n_checkpoints": sum(c["kind"] not in ("base", "merge") for c in run.checkpoints),
            "n_merges": sum(c["kind"] == "merge" for c in run.checkpoints),
            "probes": done, "audits": audits,
            "ship": s.recommendation.name if s else None,
            "explanation": s.recommendation.explanation if s else None,
            "why_none": run.summary_error}


def _names(names: list[str], every: set, shown: int = 6) -> str:
    """'all 32 checkpoints', or the names (the first few and a count)."""
    if set(names) >= every:
        return f"all {len(names)} checkpoints"
    head = ", ".join(names[:shown])
    return f"{len(names)}: {head}" + (f", ... ({len(names) - shown} more)"
                                     if len(names) > shown else "")
