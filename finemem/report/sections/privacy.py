"""Report section: the privacy audit. The one-run epsilon lower bound of every audited
checkpoint (canaries probe, coin-flip canaries) beside the epsilon the DP accountant promised
for it (RUN_DIR/dp.json), and the run's DP settings and caveats. `finemem audit` prints the
epsilon spent and the last audited checkpoint's bound after the likelihood or canaries probe."""

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


def terminal(run, console) -> bool:
    """The epsilon the accountant says each checkpoint spent (DP runs) and the audit's bound
    beside the promise at the last audited checkpoint."""
    from finemem.analysis.privacy import audit_lines, dp_line

    lines = [x for x in [dp_line(run.run_dir), *audit_lines(run.run_dir)] if x]
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    return bool(lines)


@register_section("privacy", title="Privacy audit", order=60, template=TEMPLATE,
                  probes=("likelihood", "canaries"), terminal=terminal)
def privacy(run):
    from finemem.analysis.privacy import audit_rows, dp_line
    from finemem.run.privacy import read_dp

    rows = audit_rows(run.run_dir)
    if not rows:
        return None
    rec = read_dp(run.run_dir) or {}
    return {"rows": rows, "dp": dp_line(run.run_dir), "caveats": rec.get("caveats", [])}
