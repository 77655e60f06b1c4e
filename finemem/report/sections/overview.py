"""Report section: what the run is (model, method, checkpoints, probes run) and the checkpoint
to ship with the reasons."""

from __future__ import annotations

from finemem.report.sections import register_section

TEMPLATE = """
<table class="kv">
  <tr><th>run folder</th><td><code>{{ run_dir }}</code></td></tr>
  {% if model %}<tr><th>base model</th><td><code>{{ model }}</code></td></tr>{% endif %}
  {% if method %}<tr><th>fine-tuning</th><td>{{ method }}</td></tr>{% endif %}
  {% if train_source %}<tr><th>training data</th><td><code>{{ train_source }}</code></td></tr>{% endif %}
  <tr><th>checkpoints</th><td>{{ n_checkpoints }} trained{% if n_merges %}, {{ n_merges }} merged{% endif %}</td></tr>
  <tr><th>probes run</th><td>{{ probes | join(", ") if probes else "none yet" }}</td></tr>
</table>
{% if ship %}
<div class="ship"><b>Checkpoint to ship: <code>{{ ship }}</code></b><br>{{ explanation }}</div>
{% elif why_none %}
<p class="note">No recommendation: {{ why_none }}</p>
{% endif %}
"""


@register_section("overview", title="Run", order=0, template=TEMPLATE)
def overview(run):
    cfg = run.config
    done = sorted({r["name"].split(":", 1)[1] for r in run.store.metrics()
                   if r["split"] == "*" and r["name"].startswith("done:")})
    s = run.summary
    return {"run_dir": str(run.run_dir.resolve()),
            "model": getattr(cfg, "model", None),
            "method": cfg.training.method if cfg else None,
            "train_source": cfg.data.train.source if cfg else None,
            "n_checkpoints": sum(c["kind"] not in ("base", "merge") for c in run.checkpoints),
            "n_merges": sum(c["kind"] == "merge" for c in run.checkpoints),
            "probes": done,
            "ship": s.recommendation.name if s else None,
            "explanation": s.recommendation.explanation if s else None,
            "why_none": run.summary_error}
