"""Report section of the `attention` probe: per attention statistic, at each checkpoint, the
median over layers and heads of Spearman's rho between the statistic and memorization, and the
head with the strongest rho (its interval and the number of examples)."""

from __future__ import annotations

import statistics

from finemem.report.sections import register_section
from finemem.report.sections._common import Grid, ci

TEMPLATE = """
<p>Spearman's rho between each example's attention statistic (averaged over its suffix
positions) and how well it is memorized; rho &gt; 0 for entropy means memorized examples go
with more uniform attention.</p>
{{ grid(table) }}
"""


def attention_grid(run) -> Grid | None:
    rows = run.metric_rows(split="members", name="spearman_rho")
    if not rows:
        return None
    by: dict = {}
    for r in rows:
        by.setdefault((r["checkpoint"], r["settings"]["stat"], r["settings"]["with"]),
                      []).append(r)
    out = []
    for ck in run.checkpoint_order():
        for (c, stat, with_), rs in sorted(by.items()):
            if c != ck:
                continue
            best = max(rs, key=lambda r: abs(r["value"]))
            where = f"layer {best['settings']['layer']} head {best['settings']['head']}"
            out.append([ck, stat, with_, f"{statistics.median(r['value'] for r in rs):.3f}",
                        f"{ci(best)} ({where}, n={best['n']})"])
    return Grid("Attention against memorization (Spearman's rho, 95% intervals)",
                ["checkpoint", "statistic", "memorization", "median rho", "strongest head"],
                out)


def terminal(run, console) -> bool:
    from finemem.report.tables import print_grid

    g = attention_grid(run)
    if g is None:
        return False
    print_grid(g, console)
    return True


@register_section("attention", title="Attention", order=44, template=TEMPLATE,
                  probes=("attention",), terminal=terminal)
def attention(run):
    g = attention_grid(run)
    return None if g is None else {"table": g}
