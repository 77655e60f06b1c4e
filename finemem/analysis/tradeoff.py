"""Mitigations side by side, from stored results only: task cost against leakage for runs (or
checkpoints of one run) trained with and without a mitigation.

Usage:
    rows = [tradeoff_row(run_dir, "final", "DP eps=8"), ...]
    print_tradeoff(rows); write_tradeoff_csv(rows, path); plot_tradeoff(rows, path)

Per row: test PPL (likelihood probe), membership AUC and TPR at 1% FPR of the loss attack
(membership probe), the members' greedy-extraction rate (membership probe), the canaries'
greedy-extraction rate and the one-run epsilon lower bound (canaries probe, coin-flip
canaries), the promised epsilon at that checkpoint (RUN_DIR/dp.json), and the training time
(from the store's train log: first to last optimizer step). Each value keeps its interval and
n; a missing measurement is None and shows as "-".
"""

from __future__ import annotations

import math
from pathlib import Path

from finemem.run import RunFolder
from finemem.run.privacy import read_dp

FIELDS = ("test_ppl", "auc", "tpr_at_1pct", "member_extraction", "canary_extraction",
          "eps_lower_bound", "eps_promised", "train_seconds")


def _get(metrics: list, split: str, name: str, **want) -> dict | None:
    for m in metrics:
        if m.split != split or m.name != name:
            continue
        st = m.settings
        if all(st.get(k) == v for k, v in want.items()):
            return {"value": m.value, "lo": m.lo, "hi": m.hi, "n": m.n}
    return None


def train_seconds(run_dir: Path) -> float | None:
    """Seconds from the first to the last logged optimizer step (None without a log)."""
    run = RunFolder(run_dir)
    if not run.has_results():
        return None
    with run.open_store() as store:
        lo, hi, n = store.train_time_span()
    if not n or n < 2:
        return None
    return (hi - lo) * n / (n - 1)  # n steps span n - 1 gaps


def tradeoff_row(run_dir, at: str = "final", label: str | None = None) -> dict:
    from finemem.analysis.compare import pick_checkpoint

    run_dir = Path(run_dir)
    ck = pick_checkpoint(run_dir, at)
    with RunFolder(run_dir).open_store() as store:
        ms = store.metrics(checkpoint=ck)
        step = {c.name: c.step for c in store.checkpoints()}.get(ck, 0)
    dp = read_dp(run_dir)
    promised = None
    if dp is not None:
        promised = 0.0 if step == 0 else dp.get("checkpoints", {}).get(ck, {}).get("epsilon")
    bound = _get(ms, "canaries", "epsilon_lower_bound", tier=1)
    return {"label": label or run_dir.name, "run_dir": str(run_dir), "checkpoint": ck,
            "step": step,
            "test_ppl": _get(ms, "test", "perplexity"),
            "auc": _get(ms, "membership", "membership_auc", attack="loss"),
            "tpr_at_1pct": _get(ms, "membership", "membership_tpr_at_fpr", attack="loss",
                                fpr=0.01),
            "member_extraction": _get(ms, "membership", "exact_greedy_extractable"),
            "canary_extraction": _get(ms, "canaries", "exact_greedy_extractable", tier=1),
            "eps_lower_bound": bound,
            "eps_confidence": (next(m.settings for m in ms if m.name ==
                                    "epsilon_lower_bound").get("confidence")
                               if bound else None),
            "eps_promised": promised, "dp_caveats": (dp or {}).get("caveats", []),
            "train_seconds": train_seconds(run_dir)}


def has_extraction(run_dir) -> bool:
    """Whether the run's store holds the extraction probe's per-example rows (what the
    relaxed comparison of `finemem compare` needs)."""
    run = RunFolder(run_dir)
    if not run.has_results():
        return False
    with run.open_store() as store:
        return store.has_values("members", "embedding_cosine")


def has_tradeoff(row: dict) -> bool:
    return any(row[k] is not None for k in ("auc", "eps_lower_bound", "canary_extraction"))


def fmt(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, float)):
        return "-" if isinstance(v, float) and math.isnan(v) else f"{v:.{digits}f}"
    if v.get("lo") is None or v["value"] is None or math.isnan(v["value"]):
        return f"{v['value']:.{digits}f}" if v["value"] is not None else "-"
    return f"{v['value']:.{digits}f} [{v['lo']:.{digits}f}, {v['hi']:.{digits}f}]"


def cells(r: dict) -> list[str]:
    eps = fmt(r["eps_lower_bound"], 2)
    if r["eps_lower_bound"] is not None and r["eps_confidence"]:
        eps += f" ({100 * r['eps_confidence']:.0f}%, m={r['eps_lower_bound']['n']})"
    return [r["label"], r["checkpoint"], fmt(r["test_ppl"], 2), fmt(r["auc"]),
            fmt(r["tpr_at_1pct"]), fmt(r["member_extraction"]), fmt(r["canary_extraction"]),
            eps, "-" if r["eps_promised"] is None else f"{r['eps_promised']:.2f}",
            "-" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}" + (
                f" ({r['train_cpu']:.0f})" if r.get("train_cpu") is not None else "")]


HEADERS = ["mitigation", "checkpoint", "test PPL", "MIA AUC (loss)", "TPR @ 1% FPR",
           "members extracted", "canaries extracted", "epsilon >= (audit)", "epsilon promised",
           "train s"]


def print_tradeoff(rows: list[dict], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title="Mitigations: task cost vs leakage (95% intervals; the epsilon bound is "
                    "one-sided at its confidence)")
    for h in HEADERS:
        t.add_column(h)
    for r in rows:
        t.add_row(*cells(r))
    console.print(t)
    for r in rows:
        for c in r["dp_caveats"]:
            console.print(f"note ({r['label']}): {c}")


def markdown_table(rows: list[dict]) -> list[str]:
    out = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    out += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return out


def write_tradeoff_csv(rows: list[dict], path: Path) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["label", "run_dir", "checkpoint", "step"] +
                   [f"{f}{s}" for f in FIELDS for s in ("", "_lo", "_hi", "_n")])
        for r in rows:
            line = [r["label"], r["run_dir"], r["checkpoint"], r["step"]]
            for f in FIELDS:
                v = r[f]
                line += ([v.get("value"), v.get("lo"), v.get("hi"), v.get("n")]
                         if isinstance(v, dict) else [v, None, None, None])
            w.writerow(["" if x is None else x for x in line])
    return path


def plot_tradeoff(rows: list[dict], path: Path) -> Path | None:
    """Utility (test PPL, lower is better) against leakage (membership AUC of the loss attack),
    each mitigation a point with both intervals."""
    pts = [r for r in rows if r["test_ppl"] and r["auc"]]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for k, r in enumerate(pts):
        a, p = r["auc"], r["test_ppl"]
        xerr = [[a["value"] - (a["lo"] if a["lo"] is not None else a["value"])],
                [(a["hi"] if a["hi"] is not None else a["value"]) - a["value"]]]
        yerr = [[p["value"] - (p["lo"] if p["lo"] is not None else p["value"])],
                [(p["hi"] if p["hi"] is not None else p["value"]) - p["value"]]]
        ax.errorbar(a["value"], p["value"], xerr=xerr, yerr=yerr, fmt="o", color=f"C{k % 10}",
                    capsize=3, label=r["label"])
    ax.axvline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("membership AUC, loss attack (0.5 = no leakage)")
    ax.set_ylabel("test PPL of the reference solutions (lower = better)")
    ax.set_title("Mitigations: utility vs leakage (95% intervals)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
