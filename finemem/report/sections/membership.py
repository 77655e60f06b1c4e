"""Report section of the `membership` probe: every attack's ROC AUC and TPR at each low FPR
(with their 95% intervals and the number of members) per checkpoint, the FPRs refused for too
few non-members, each attack's AUC across checkpoints, and every attack's ROC curve at the
recommended and the last checkpoint (from the per-example scores the probe stored)."""

from __future__ import annotations

from finemem.report.sections import register_section
from finemem.report.sections._common import Grid, ci

TEMPLATE = """
<p>Members are training examples, non-members data the run never saw; an AUC of 0.5 is
chance. Intervals: stratified bootstrap (AUC), Clopper-Pearson (TPR).</p>
{{ grid(table) }}
{% if plot %}<figure><img class="plot" data-plot="membership" alt="AUC per checkpoint" src="{{ plot }}"></figure>{% endif %}
{% if roc %}<figure><img class="plot" data-plot="membership-roc" alt="ROC curves at {{ roc.alt }}" src="{{ roc.uri }}">
<figcaption>ROC curves (log-log) at {{ roc.alt }}; {{ roc.note }}</figcaption></figure>{% endif %}
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
    blind = {r["checkpoint"]: r for r in rows if r["name"] == "blind_baseline_auc"}
    if blind:
        # the model-free text classifier, beside the attacks on every checkpoint
        out = [r for ck in run.checkpoint_order() for r in
               [x for x in out if x[0] == ck]
               + ([[ck, "blind baseline (text only)", ci(blind[ck])] + ["-"] * len(fprs)]
                  if ck in blind else [])]
    notes = [_population_note(cell.get((r[0], "membership_auc", r[1], None)) for r in out)]
    shift = blind_shift(run)
    if shift:
        notes.insert(0, shift)
    if not fprs:
        notes.append("No TPR at low FPR: too few non-members (TPR at 1% FPR needs >= 100).")
    return Grid("Membership inference per checkpoint (95% intervals)", headers, out, notes)


def _population_note(shown) -> str:
    """How many members and non-members the shown AUCs compare. A run audited twice with
    other counts keeps both audits' rows; each cell shows the one written last (the store
    reads rows in write order), and the note says so rather than quoting one audit's counts."""
    pops = list(dict.fromkeys((r["n"], r["settings"].get("nonmembers")) for r in shown if r))
    if len(pops) == 1:
        return f"{pops[0][0]} members, {pops[0][1]} non-members."
    return ("Audits with different counts are stored; each cell shows the latest: "
            + ", ".join(f"{m} members vs {n} non-members" for m, n in pops) + ".")


def blind_shift(run) -> str | None:
    """The distribution-shift warning when any stored blind baseline's interval lies above
    0.55 (Das et al. 2024), else None."""
    from finemem.metrics.blind import SHIFT_NOTE, distribution_shift

    for r in run.metric_rows(split="membership", name="blind_baseline_auc"):
        if distribution_shift(r["lo"]):
            return (f"WARNING: {SHIFT_NOTE} (blind baseline AUC {r['value']:.2f} "
                    f"[{r['lo']:.2f}, {r['hi']:.2f}] from the text alone).")
    return None


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


def roc_checkpoints(run) -> list[tuple[str, str]]:
    """[(checkpoint, label)]: the recommended and the last trained checkpoint that have stored
    per-example attack scores (one entry when they are the same)."""
    from finemem.audit.attacks._provide import HISTORY_SPLIT

    have = [c for c in run.checkpoint_order()
            if run.example_values(c, f"{HISTORY_SPLIT}/attack_scores")]
    if not have:
        return []
    kinds = {c.name: c.kind for c in run.checkpoints}
    trained = [c for c in have if kinds.get(c) not in ("merge", "base")]
    last = trained[-1] if trained else have[-1]
    rec = run.summary.recommendation.name if run.summary is not None else None
    if rec == last:
        return [(last, "recommended, last")]
    return ([(rec, "recommended")] if rec in have else []) + [(last, "last")]


def roc_curves(run, checkpoint: str) -> dict[str, tuple]:
    """{attack: (fpr, tpr, members, non-members)} at a checkpoint, from the stored per-example
    attack scores of the members and non-members (`roc_points`); attacks no longer registered
    are left out."""
    from finemem.audit.attacks import ATTACKS, load_attacks
    from finemem.audit.attacks._provide import HISTORY_SPLIT
    from finemem.metrics.membership import roc_points

    scores = run.example_values(checkpoint, f"{HISTORY_SPLIT}/attack_scores")
    member = run.example_values(checkpoint, f"{HISTORY_SPLIT}/is_member")
    ids = [i for i in scores if i in member]
    load_attacks()
    out = {}
    for attack in dict.fromkeys(a for i in ids for a in scores[i]):
        if attack not in ATTACKS:
            continue
        m = [scores[i][attack] for i in ids if member[i] and attack in scores[i]]
        n = [scores[i][attack] for i in ids if not member[i] and attack in scores[i]]
        if m and n:
            out[attack] = (*roc_points(m, n, member_when=ATTACKS[attack].member_when),
                           len(m), len(n))
    return out


def _roc_plot(run):
    """One log-log panel per checkpoint of `roc_checkpoints`; None when no scores are stored."""
    import matplotlib.pyplot as plt
    import numpy as np

    from finemem.report.plots import figure_data_uri

    cks = [(c, label, roc_curves(run, c)) for c, label in roc_checkpoints(run)]
    cks = [x for x in cks if x[2]]
    if not cks:
        return None
    fig, axes = plt.subplots(1, len(cks), figsize=(3.6 * len(cks), 3.4), squeeze=False)
    counts = set()
    for ax, (ck, label, curves) in zip(axes[0], cks):
        floor = 1.0
        for attack, (f, t, n_m, n_n) in curves.items():
            counts.add((n_m, n_n))
            floor = min(floor, 1.0 / n_n)
            ok = (f > 0) & (t > 0)  # a log axis has no 0: FPR below 1/N is not resolved
            ax.plot(f[ok], t[ok], lw=1.2, label=attack)
        grid = np.logspace(np.log10(floor / 2), 0, 50)
        ax.plot(grid, grid, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set(xlim=(floor / 2, 1), ylim=(floor / 2, 1.05), xlabel="false-positive rate",
               ylabel="true-positive rate", title=f"{ck} ({label})")
        ax.title.set_fontsize(8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    n_m, n_n = max(counts)
    note = (f"{n_m} members, {n_n} non-members; dashed: chance; the curve starts at FPR 1/N "
            f"= {1 / n_n:.2g}, the lowest rate N non-members resolve.")
    if run.summary is None:
        note += " No recommended checkpoint (the stage table needs the default probes)."
    return {"uri": figure_data_uri(fig), "note": note,
            "alt": ", ".join(f"{c} ({label})" for c, label, _ in cks)}


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
    return None if g is None else {"table": g, "plot": _plot(run), "roc": _roc_plot(run)}
