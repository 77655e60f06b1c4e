"""Report section: the per-record risk register's top rows (`finemem.audit.risk`), the records
most at risk first, their previews with secrets masked unless `--show-secrets`."""

from __future__ import annotations

from finemem.report.sections import register_section

N_SHOWN = 12
SHOWN = ["record", "times_seen", "secrets_found", "secrets_greedy", "secrets_sampled",
         "extracted_types", "extraction_category", "first_extractable_epoch",
         "first_below_band_epoch", "pct_loss", "fpr_at_score", "preview"]

TEMPLATE = """
<p>One row per training record at <code>{{ ck }}</code>, most at risk first (secrets extracted
greedily, then by sampling, then exact extraction, then the loss attack's percentile among the
members). <code>finemem risk RUN_DIR --out risk.csv</code> exports every row and column.
{% if masked %}Secrets in the previews are masked.{% endif %}</p>
<table class="data"><tr>{% for c in cols %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in rows %}<tr>{% for c in cols %}<td>{{ r[c] if r[c] is not none else '-' }}</td>{% endfor %}</tr>{% endfor %}
</table>
<p>{% for n in notes %}{{ n }}. {% endfor %}</p>
"""


def _register(run):
    from finemem.audit.risk import risk_register
    from finemem.errors import UserError

    try:
        return risk_register(run.run_dir, show_secrets=run.show_secrets)
    except UserError:
        return None


@register_section("risk", title="Records most at risk", order=48, template=TEMPLATE)
def risk(run):
    reg = _register(run)
    if reg is None or not reg.rows:
        return None
    have = {k for r in reg.rows for k in r}
    cols = [c for c in SHOWN if c in have]
    rows = [{c: r.get(c) for c in cols} for r in reg.rows[:N_SHOWN]]
    return {"ck": reg.checkpoint, "cols": cols, "rows": rows, "notes": reg.notes,
            "masked": not run.show_secrets}
