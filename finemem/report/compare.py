"""`finemem compare`'s outputs from a `finemem.analysis.compare.Comparison`: the rich table (one
line per run), the CSVs (every number) and the threshold-curve plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from finemem.analysis.compare import OUTCOMES, SETS, Comparison


def fmt(v: tuple | None, digits: int = 2, pct: bool = False) -> str:
    if v is None or v[0] is None or (isinstance(v[0], float) and math.isnan(v[0])):
        return "-"
    if pct:
        return f"{v[0]:+.0%} [{v[1]:+.0%}, {v[2]:+.0%}]"
    return f"{v[0]:.{digits}f} [{v[1]:.{digits}f}, {v[2]:.{digits}f}]"


def _perf(m: dict | None, digits: int = 3) -> str:
    if not m:
        return "-"
    if m.get("lo") is None:
        return f"{m['value']:.{digits}f}"
    return f"{m['value']:.{digits}f} [{m['lo']:.{digits}f}, {m['hi']:.{digits}f}]"


def table(cmp: Comparison):
    """A rich table: one line per run (the CSV has every number)."""
    from rich.table import Table

    t = Table(title=f"Memorization vs task performance (reference: {cmp.reference}; "
                    f"{cmp.members} members, {cmp.nonmembers} non-members; 95% intervals)")
    acc = any(r.side.test_acc for r in cmp.rows)
    cols = ["run", "checkpoint", "method", "test PPL"] + (["test acc"] if acc else []) + [
        f"relaxed >= {cmp.threshold:g}: members", "non-members", "excess", "exact", "verbatim",
        "reduction vs reference: relaxed", "verbatim", "comparable?"]
    for col in cols:
        t.add_column(col)
    for r in cmp.rows:
        s = r.side
        method = s.settings["method"] + (f" r{s.settings['lora_r']}" if s.settings["lora_r"]
                                          else "")
        if s.settings["duplication"] > 1:
            method += f" x{s.settings['duplication']}"
        comp = ("reference" if r.comparable is None else
                "yes" if r.comparable else f"NO: {r.perf_note}")
        ppl = f"{s.test_ppl['value']:.2f}" if s.test_ppl else "-"
        cells = [s.label, s.checkpoint, method, ppl]
        if acc:
            cells.append(_perf(s.test_acc, 2))
        cells += [fmt(r.rates[("relaxed", "members")]), fmt(r.rates[("relaxed", "nonmembers")]),
                  fmt(r.excess["relaxed"]), fmt(r.rates[("exact", "members")]),
                  fmt(r.rates[("verbatim", "members")]),
                  fmt(r.reduction.get("relaxed"), pct=True),
                  fmt(r.reduction.get("verbatim"), pct=True), comp]
        t.add_row(*cells)
    return t


def write_csv(cmp: Comparison, path: Path) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ["run", "run_dir", "checkpoint", "step", "epoch", "method", "model", "lr", "lora_r",
            "lora_alpha", "duplication", "test_ppl", "test_ppl_lo", "test_ppl_hi", "test_acc",
            "test_acc_lo", "test_acc_hi", "members_n", "nonmembers_n", "threshold"]
    for o in OUTCOMES:
        for what in ("members", "nonmembers", "excess", "reduction"):
            cols += [f"{o}_{what}", f"{o}_{what}_lo", f"{o}_{what}_hi"]
    cols += ["comparable", "performance_note"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in cmp.rows:
            s = r.side
            p, a = s.test_ppl or {}, s.test_acc or {}
            line = [s.label, str(s.run_dir), s.checkpoint, s.step, s.epoch,
                    *[s.settings[k] for k in ("method", "model", "lr", "lora_r", "lora_alpha",
                                              "duplication")],
                    p.get("value"), p.get("lo"), p.get("hi"), a.get("value"), a.get("lo"),
                    a.get("hi"), cmp.members, cmp.nonmembers, cmp.threshold]
            for o in OUTCOMES:
                line += [*r.rates[(o, "members")], *r.rates[(o, "nonmembers")], *r.excess[o],
                         *(r.reduction.get(o) or (None, None, None))]
            line += ["reference" if r.comparable is None else r.comparable, r.perf_note]
            w.writerow(["" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                        for v in line])
    curve = path.with_name(path.stem + "_curves.csv")
    with open(curve, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["run", "set", "threshold", "relaxed_memorization_rate", "lo", "hi"])
        for r in cmp.rows:
            for s in SETS:
                for t, v, lo, hi in r.curve[s]:
                    w.writerow([r.side.label, s, t, v, lo, hi])
    return path


def plot_curves(cmp: Comparison, path: Path) -> Path:
    """Threshold curves of every run on one figure: members solid (with the 95% band),
    non-members dashed; runs not at comparable task performance are marked in the legend and
    named under the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for k, r in enumerate(cmp.rows):
        color = f"C{k % 10}"
        mark = "" if r.comparable in (None, True) else " (not comparable)"
        t, v, lo, hi = np.array(r.curve["members"], dtype=float).T
        ax.plot(t, v, color=color, marker="o", ms=3, label=f"{r.side.label}{mark}")
        ax.fill_between(t, lo, hi, color=color, alpha=0.12)
        t, v, _, _ = np.array(r.curve["nonmembers"], dtype=float).T
        ax.plot(t, v, color=color, ls="--", lw=1)
    ax.axvline(cmp.threshold, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("cosine threshold (MiniLM, generation vs true suffix)")
    ax.set_ylabel("relaxed memorization rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Relaxed memorization: members (solid, 95% band) vs non-members (dashed)",
                 fontsize=10)
    ax.legend(fontsize=8)
    bad = [r.side.label for r in cmp.rows if r.comparable is False]
    if bad:
        fig.text(0.01, 0.01, f"Not at comparable task performance (margin {cmp.margin:g}): "
                 + ", ".join(bad), fontsize=8, color="firebrick")
    fig.tight_layout(rect=(0, 0.04 if bad else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
