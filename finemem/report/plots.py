"""Plots of an audited run. Reads a `RunSummary`; writes PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

# The paper's three states as background colours; classic overfitting gets its own.
STAGE_COLOURS = {"underfit": ("#f4cccc", "low accuracy"),
                 "healthy": ("#d9ead3", "high accuracy, low test PPL"),
                 "over-memorized": ("#fce5cd", "high accuracy, high test PPL (over-memorized)"),
                 "overfit": ("#d9d9d9", "accuracy falling, PPL rising (overfit)")}


def plot_dynamics(summary, out: str | Path) -> Path:
    """Test accuracy and test PPL of the reference solutions against epoch, over stage colours."""
    rows = summary.rows
    x = [r.epoch for r in rows]
    acc = summary.column("test/accuracy")
    ppl = summary.column("test/ppl")
    fig, ax = plt.subplots(figsize=(8, 5.2))
    edges = [x[0]] + [(a + b) / 2 for a, b in zip(x, x[1:])] + [x[-1]]
    for i, lab in enumerate(summary.labels):
        ax.axvspan(edges[i], edges[i + 1], color=STAGE_COLOURS[lab.label][0], lw=0)
    lo = [r.metrics["test/accuracy"]["lo"] for r in rows]
    hi = [r.metrics["test/accuracy"]["hi"] for r in rows]
    ax.plot(x, acc, "o-", color="#1f4e79", label="test accuracy")
    ax.fill_between(x, lo, hi, color="#1f4e79", alpha=0.15)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (greedy, 95% CI)")
    ax.set_ylim(-0.02, 1.02)
    ax2 = ax.twinx()
    ax2.plot(x, ppl, "s--", color="#a61c00", label="test PPL of reference solutions")
    ax2.set_ylabel("test PPL (reference solutions)")
    handles = [ax.lines[0], ax2.lines[0]] + [
        Patch(color=c, label=t) for k, (c, t) in STAGE_COLOURS.items()
        if k in {lab.label for lab in summary.labels}]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2,
              fontsize=8, frameon=False)
    ax.set_title(f"Learning dynamics: {Path(summary.run_dir).name}")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_diversity(summary, out: str | Path, keys: tuple[str, ...] = (
        "test/first_token_entropy", "test/distinct@8", "test/distinct_openings@8",
        "test/self_bleu")) -> Path | None:
    keys = tuple(k for k in keys if any(k in r.metrics for r in summary.rows))
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    axes = [axes] if len(keys) == 1 else axes
    x = [r.epoch for r in summary.rows]
    for ax, k in zip(axes, keys):
        ax.plot(x, summary.column(k), "o-")
        ax.set_title(k.split("/", 1)[1])
        ax.set_xlabel("epoch")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
