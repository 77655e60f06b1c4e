"""Report section of the `membership` probe: every attack's ROC AUC and TPR at each low FPR
(with their 95% intervals and the number of members) per checkpoint, the FPRs refused for too
few non-members, and each attack's AUC across checkpoints."""

from __future__ import annotations

from finemem.report.sections import register_section
from finemem.report.sections._common import Grid, ci

TEMPLATE = """
<p>Members are training examples, non-members data the run never saw; an AUC of 0.5 is
chance. Intervals: stratified bootstrap (AUC), Clopper-Pearson (TPR).</p>
{{ grid(table) }}
{% if plot %}<figure><img class="plot" data-plot="membership" alt="AUC per checkpoint" src="{{ plot }}"></figure>{% endif %}
"""


def membership_grid(run) -> Grid | None:
    rows = run.metric_rows(split="membership")
    aucs = [r for r in rows if r["name"] == "membership_auc"]
    if not aucs:
        return None
    attacks = list(dict.fromkeys(r["settings"]["attack"] for r in aucs))
    fprs = sorted({r["settings"]["fpr"] for r in rows if r["name"] == "membership_tpr_at_fpr"})
    cell = {(r["checkpoint"], r["name"], r["settings"]["attack"], r["settings"].get("fpr")): r
            for r in rows if "attack" in r["settings"]}
    headers = ["checkpoint", "attack", "AUC [95% CI]"] + [f"TPR @ {f:g} FPR" for f in fprs]
    out = []
    for ck in run.checkpoint_order():
        for a in attacks:
            auc = cell.get((ck, "membership_auc", a, None))
            if auc is None:
                continue
            out.append([ck, a, ci(auc)] + [ci(cell.get((ck, "membership_tpr_at_fpr", a, f)))
                                            for f in fprs])
    first = aucs[0]
    notes = [f"{first['n']} members, {first['settings'].get('nonmembers')} non-members."]
    if not fprs:
        notes.append("No TPR at low FPR: too few non-members (TPR at 1% FPR needs >= 100).")
    return Grid("Membership inference per checkpoint (95% intervals)", headers, out, notes)


def _plot(run):
    import matplotlib.pyplot as plt

    from finemem.report.plots import figure_data_uri

    order = run.checkpoint_order()
    by: dict[str, list] = {}
    for r in run.metric_rows(split="membership", name="membership_auc"):
        by.setdefault(r["settings"]["attack"], []).append(r)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for attack, rs in by.items():
        rs = sorted(rs, key=lambda r: order.index(r["checkpoint"]) if r["checkpoint"] in order
                    else len(order))
        x = list(range(len(rs)))
        ax.errorbar(x, [r["value"] for r in rs],
                    yerr=[[r["value"] - (r["lo"] if r["lo"] is not None else r["value"])
                           for r in rs],
                          [(r["hi"] if r["hi"] is not None else r["value"]) - r["value"]
                           for r in rs]], marker="o", capsize=2, label=attack)
        ax.set_xticks(x, [r["checkpoint"].replace("step-", "") for r in rs], rotation=45,
                      fontsize=7)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="checkpoint (step)", ylabel="ROC AUC", ylim=(0, 1))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_data_uri(fig)


def terminal(run, console) -> bool:
    from finemem.report.tables import print_grid

    g = membership_grid(run)
    if g is None:
        return False
    print_grid(g, console)
    return True


@register_section("membership", title="Membership inference", order=45, template=TEMPLATE,
                  probes=("membership",), terminal=terminal)
def membership(run):
    g = membership_grid(run)
    return None if g is None else {"table": g, "plot": _plot(run)}
