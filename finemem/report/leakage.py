"""The accuracy-vs-leakage table and plot of `finemem recommend` (from
`finemem.analysis.leakage` rows; reads no model).

Usage:
    print_leakage(rows, attack="loss", graded=True)
    write_leakage_plot(rows, run_dir / "report" / "leakage.png", attack="loss", graded=True)
"""

from __future__ import annotations

import math
from pathlib import Path


def _fmt(v: float, lo, hi) -> str:
    if math.isnan(v):
        return "-"
    return f"{v:.3f} [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else f"{v:.3f}"


def print_leakage(rows: list[dict], *, attack: str, graded: bool, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title=f"accuracy vs leakage ({attack} attack; 95% intervals)", show_edge=False)
    for col in ("checkpoint", "epoch", "test acc" if graded else "test PPL", "membership AUC",
                "TPR @ 1% FPR", "extraction (whole completion)"):
        t.add_column(col, justify="left" if col == "checkpoint" else "right")
    refusal = None
    for r in rows:
        q = f"{r['acc']:.3f}" if graded else f"{r['ppl']:.3g}"
        tpr = _fmt(r["tpr"], r["tpr_lo"], r["tpr_hi"])
        if math.isnan(r["tpr"]) and r["nonmembers"] is not None and r["nonmembers"] < 100:
            tpr, refusal = "refused", (f"TPR at 1% FPR refused: needs >= 100 non-members, has "
                                       f"{r['nonmembers']}")
        t.add_row(r["name"] + (" (merge)" if r["merged"] else ""), f"{r['epoch']:.2f}", q,
                  _fmt(r["auc"], r["auc_lo"], r["auc_hi"]), tpr,
                  _fmt(r["extraction"], r["extraction_lo"], r["extraction_hi"]))
    console.print(t)
    if refusal:
        console.print(refusal)


def write_leakage_plot(rows: list[dict], out: str | Path, *, attack: str, graded: bool) -> Path:
    """Accuracy (or test PPL) and membership AUC / extraction rate per checkpoint, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traj = [r for r in rows if not r["merged"]]
    x = [r["epoch"] for r in traj]
    fig, ax = plt.subplots(figsize=(7, 4))
    q = [r["acc"] if graded else r["ppl"] for r in traj]
    ax.plot(x, q, "o-", color="#1f77b4", label="test accuracy" if graded else "test PPL")
    if graded:
        ax.set_ylim(0, 1.02)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy" if graded else "test PPL", color="#1f77b4")
    ax2 = ax.twinx()
    for key, colour, label in (("auc", "#d62728", f"membership AUC ({attack})"),
                               ("extraction", "#ff7f0e",
                                "extraction, whole completion (members)")):
        pts = [(xi, r) for xi, r in zip(x, traj) if not math.isnan(r[key])]
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ax2.plot(xs, [p[1][key] for p in pts], "s--", color=colour, label=label)
        if all(p[1][key + "_lo"] is not None for p in pts):
            ax2.fill_between(xs, [p[1][key + "_lo"] for p in pts],
                             [p[1][key + "_hi"] for p in pts], color=colour, alpha=0.15)
    ax2.axhline(0.5, color="#d62728", lw=0.6, ls=":")
    ax2.set_ylim(0, 1.02)
    ax2.set_ylabel("leakage (higher = leaks more)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="lower right", fontsize=8)
    ax.set_title("accuracy vs leakage per checkpoint")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def ship_leakage_lines(rows: list[dict], ship: str, pick, *, attack: str) -> list[str]:
    """What the checkpoint to ship leaks (membership AUC, TPR at 1% FPR, greedy extraction of
    whole completions, with intervals), the most accurate checkpoint within the budget
    (`pick`, from `analysis.leakage.pick_within`) and one sentence on the trade-off."""
    r = next(x for x in rows if x["name"] == ship)
    n = f"{r['members']} members, {r['nonmembers']} non-members"
    tpr = ("refused (needs >= 100 non-members)" if math.isnan(r["tpr"])
           else _fmt(r["tpr"], r["tpr_lo"], r["tpr_hi"]))
    lines = [f"Ship {ship} (epoch {r['epoch']:g}, test accuracy {r['acc']:.3f}): {attack}-attack "
             f"membership AUC {_fmt(r['auc'], r['auc_lo'], r['auc_hi'])}, TPR at 1% FPR {tpr} "
             f"({n}; AUC 0.5 = chance); greedy decoding reproduces the whole completion of "
             f"{_fmt(r['extraction'], r['extraction_lo'], r['extraction_hi'])} of the members.",
             pick.explanation]
    if pick.row is not None and pick.row["name"] == ship:
        lines.append("The checkpoint to ship is within the budget: no accuracy is given up.")
    elif pick.row is not None:
        p = pick.row
        what = f"{p['name']} (the base model itself)" if p["step"] == 0 else p["name"]
        lines.append(f"The trade-off: shipping {what} instead gives up "
                     f"{r['acc'] - p['acc']:.3f} test accuracy ({r['acc']:.3f} -> "
                     f"{p['acc']:.3f}) to bring the AUC from {r['auc']:.3f} to {p['auc']:.3f}; "
                     "`finemem recommend RUN_DIR --max-leakage auc=0.7` tries another budget.")
    return lines


def recommend_with_leakage(run_dir: str | Path, max_leakage: str | None, attack: str) -> None:
    """`finemem recommend`: the stage rule's recommendation; with membership results in the
    store also the accuracy-vs-leakage table and plot, and with a budget the most accurate
    checkpoint within it. Bad input raises `UserError` before anything is printed or written."""
    import typer

    from finemem.analysis.leakage import (blind_shift_note, has_leakage, leakage_rows,
                                          parse_budget, pick_within)
    from finemem.audit import summarize
    from finemem.errors import UserError
    from finemem.audit.attacks import get_attack

    get_attack(attack, field_name="--attack")
    budget = parse_budget(max_leakage) if max_leakage is not None else None
    s = summarize(run_dir)
    rows = leakage_rows(s, attack=attack)
    if budget is not None and not has_leakage(rows):
        raise UserError("no membership results in the store; run `finemem audit RUN_DIR "
                        "--probes membership` first", source=str(run_dir),
                        field="--max-leakage")
    pick = pick_within(rows, budget, graded=s.graded) if budget is not None else None
    typer.echo(s.recommendation.explanation)
    if has_leakage(rows):
        print_leakage(rows, attack=attack, graded=s.graded)
        plot = write_leakage_plot(rows, Path(run_dir) / "report" / "leakage.png",
                                  attack=attack, graded=s.graded)
        typer.echo(f"plot: {plot}")
    if pick is not None:
        typer.echo(pick.explanation)
    shift = blind_shift_note(s.rows + s.merges)
    if shift and has_leakage(rows):
        typer.echo(shift)
    from finemem.analysis.privacy import audit_lines  # issue 21 hook: the privacy audit

    shipped = pick.row["name"] if pick is not None and pick.row else \
        getattr(s.recommendation, "name", None)
    for line in audit_lines(run_dir, shipped):
        typer.echo(line)
