"""Report section of the `canaries` probe: per checkpoint and tier, the canaries' exposure (in
bits, against their never-inserted twins), their greedy-extraction rate and an attack's AUC and
TPR at 1% FPR against the twins, each with its 95% interval; `finemem canaries show` prints the
same table."""

from __future__ import annotations

from finemem.report.sections import register_section
from finemem.report.sections._common import Grid

TEMPLATE = """
<p>Exposure = log2(candidates) - log2(rank of the canary among its twins); a canary seen more
often per epoch (a higher tier) should be more exposed.</p>
{{ grid(table) }}
"""


def canary_grid(run, attack: str = "loss", n_twins: int | None = None) -> Grid | None:
    """The per-tier table of one attack; None when the run has no canary results."""
    cell: dict = {}
    for r in run.metric_rows(split="canaries"):
        st = r["settings"]
        if r["name"] == "exposure" and st.get("family") != "all":
            continue
        if r["name"] in ("membership_auc", "membership_tpr_at_fpr") and (
                st.get("attack") != attack or st.get("fpr", 0.01) != 0.01):
            continue
        cell[(r["checkpoint"], st["tier"], r["name"])] = r
    if not cell:
        return None

    def fmt(r, d=3):
        if r is None:
            return "-"
        return f"{r['value']:.{d}f} [{r['lo']:.{d - 1}f}, {r['hi']:.{d - 1}f}]"

    order = {c: i for i, c in enumerate(run.checkpoint_order())}
    twins = f"{n_twins} twins; " if n_twins is not None else ""
    rows = []
    for ck, tier in sorted({(k[0], k[1]) for k in cell}, key=lambda k: (order.get(k[0], 0), k[1])):
        tpr = cell.get((ck, tier, "membership_tpr_at_fpr"))
        rows.append([ck, f"{tier}x", fmt(cell.get((ck, tier, "exposure")), 2),
                     fmt(cell.get((ck, tier, "exact_greedy_extractable"))),
                     fmt(cell.get((ck, tier, "membership_auc"))),
                     fmt(tpr) if tpr else f"refused (needs >= 100 twins, has {n_twins})"])
    return Grid(f"canaries ({twins}{attack} attack; 95% intervals)",
                ["checkpoint", "tier", "exposure (bits)", "extracted", "AUC", "TPR @ 1% FPR"],
                rows)


def _twins(run) -> int | None:
    from finemem.data.canaries import read_canaries

    try:
        return sum(not c.inserted for c in read_canaries(run.run_dir))
    except Exception:  # noqa: BLE001 - a run without its canary file still shows its rows
        return None


def terminal(run, console) -> bool:
    from finemem.report.tables import print_grid

    g = canary_grid(run, n_twins=_twins(run))
    if g is None:
        return False
    print_grid(g, console)
    return True


@register_section("canaries", title="Canaries", order=47, template=TEMPLATE,
                  probes=("canaries",), terminal=terminal)
def canaries(run):
    g = canary_grid(run, n_twins=_twins(run))
    return None if g is None else {"table": g}
