"""Report section: the privacy audit. The one-run epsilon lower bound of every audited
checkpoint (canaries probe, coin-flip canaries) beside the epsilon the DP accountant promised
for it (RUN_DIR/dp.json), and the run's DP settings and caveats."""

from __future__ import annotations

from finemem.report.sections import register_section

TEMPLATE = """
{% if dp %}<p>{{ dp }}</p>{% else %}<p>Trained without <code>training.dp</code>: nothing was
promised; the bound shows how much the run provably leaks about a canary.</p>{% endif %}
{% for c in caveats %}<p class="note">{{ c }}</p>{% endfor %}
<table class="data">
  <thead><tr><th>checkpoint</th><th>tier</th><th>canaries</th><th>attack</th>
    <th>epsilon &ge; (audit)</th><th>confidence</th><th>epsilon promised</th></tr></thead>
  <tbody>{% for r in rows %}<tr><td><code>{{ r.checkpoint }}</code></td><td>{{ r.tier }}x</td>
    <td class="num">{{ r.n }}</td><td>{{ r.attack }}</td><td class="num">{{ r.bound | num }}</td>
    <td class="num">{{ r.confidence | num }}</td><td class="num">{{ r.promised | num }}</td></tr>
  {% endfor %}</tbody>
</table>
<p>The bound (Steinke, Nasr &amp; Jagielski 2023) says the run is not (epsilon, delta)-DP for
any smaller epsilon, at that confidence; it never says how much the run leaks at most.</p>
"""


@register_section("privacy", title="Privacy audit", order=60, template=TEMPLATE)
def privacy(run):
    from finemem.analysis.privacy import audit_rows, dp_line
    from finemem.privacy import read_dp

    rows = audit_rows(run.run_dir)
    if not rows:
        return None
    rec = read_dp(run.run_dir) or {}
    return {"rows": rows, "dp": dp_line(run.run_dir), "caveats": rec.get("caveats", [])}
