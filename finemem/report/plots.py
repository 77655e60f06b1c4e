"""Plots of an audited run. Reads a `RunSummary`; writes PNG files. Axis notes on direction
come from the metric registry."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from finemem.metrics.registry import get_metric  # noqa: E402

# The paper's three states as background colours; classic overfitting gets its own.
STAGE_COLOURS = {"underfit": ("#f4cccc", "low accuracy"),
                 "healthy": ("#d9ead3", "high accuracy, low test PPL"),
                 "over-memorized": ("#fce5cd", "high accuracy, high test PPL (over-memorized)"),
                 "overfit": ("#d9d9d9", "accuracy falling, PPL rising (overfit)")}


def _save(fig, out: str | Path, dpi: int = 120) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def _ppl_axis(ax, rows, key: str, style: str, colour: str, label: str) -> list:
    """Plot a PPL curve on a log axis with the base model (step 0) shown apart: the line joins
    the fine-tuned checkpoints only and the y-range is theirs, so a base PPL in the thousands
    does not squash the fine-tuned curve; the base is one hollow marker, drawn at the top edge
    with its value written beside it when it lies above the range."""
    base = [r for r in rows if r.step == 0 and r.has(key)]
    tuned = [r for r in rows if r.step > 0 and r.has(key)]
    handles = []
    if tuned:
        vals = [r.get(key) for r in tuned]
        handles += ax.plot([r.epoch for r in tuned], vals, style, color=colour, label=label)
        lo, hi = min(vals), max(vals)
        prev = getattr(ax, "_finemem_range", None)  # a second curve on the same axis
        if prev:
            lo, hi = min(lo, prev[0]), max(hi, prev[1])
        ax._finemem_range = (lo, hi)
        ax.set_yscale("log")
        ax.set_ylim(lo / 1.15, hi * 1.6)
    for r in base:
        v = r.get(key)
        bottom, top = ax.get_ylim()
        shown = max(min(v, top / 1.05), bottom * 1.05) if tuned else v
        handles += ax.plot([r.epoch], [shown], style[0], color=colour, mfc="white",
                           label=f"{label.split(' (')[0]} at step 0 (base): {v:.4g}")
        if tuned and shown != v:
            arrow = "\u2191" if v > shown else "\u2193"
            ax.annotate(f"base {v:.4g} {arrow}", (r.epoch, shown), textcoords="offset points",
                        xytext=(6, -4), fontsize=7, color=colour)
    if not tuned and base:
        ax.set_yscale("log")
    plain_log_ticks(ax)
    return handles


def plain_log_ticks(ax, axis: str = "y") -> None:
    """Label a log axis with plain numbers ("2", "3", "20") instead of matplotlib's default
    "2 x 10^0"; which ticks get a label is still matplotlib's choice (LogFormatter)."""
    from matplotlib.ticker import FuncFormatter, LogFormatter

    which = ax.yaxis if axis == "y" else ax.xaxis
    for minor in (False, True):
        picker = LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5))

        def label(v, pos, picker=picker):
            return f"{v:.4g}" if picker(v, pos) else ""
        fmt = FuncFormatter(label)
        fmt.set_locs = picker.set_locs  # the picker decides from the visible range
        fmt.set_axis = lambda a, picker=picker, fmt=fmt: (picker.set_axis(a),
                                                          FuncFormatter.set_axis(fmt, a))
        (which.set_minor_formatter if minor else which.set_major_formatter)(fmt)


def dynamics_figure(summary):
    """The learning-dynamics figure (see `plot_dynamics`); the caller saves or embeds it."""
    rows, merges = summary.rows, summary.merges
    x = [r.epoch for r in rows]
    fig, ax = plt.subplots(figsize=(8, 5.2))
    handles = []
    if summary.graded:
        edges = [x[0]] + [(a + b) / 2 for a, b in zip(x, x[1:])] + [x[-1]]
        for i, lab in enumerate(summary.labels):
            ax.axvspan(edges[i], edges[i + 1], color=STAGE_COLOURS[lab.label][0], lw=0)
        acc = [r.find("test/answer_accuracy") for r in rows]
        handles += ax.plot(x, [a["value"] for a in acc], "o-", color="#1f4e79",
                           label="test accuracy")
        ax.fill_between(x, [a["lo"] for a in acc], [a["hi"] for a in acc], color="#1f4e79",
                        alpha=0.15)
        if merges:
            handles += ax.plot([m.epoch for m in merges],
                               [m.get("test/answer_accuracy") for m in merges], "D",
                               color="#1f4e79", mfc="white", label="test accuracy (merge)")
        ax.set_ylabel("test accuracy (greedy, 95% CI)")
        ax.set_ylim(-0.02, 1.02)
        ppl_ax = ax.twinx()
    else:
        ppl_ax = ax
        if any(r.has("train/perplexity") for r in rows):
            handles += _ppl_axis(ax, rows, "train/perplexity", "o:", "#555555", "train PPL")
    handles += _ppl_axis(ppl_ax, rows, "test/perplexity", "s--", "#a61c00",
                         "test PPL of reference completions")
    if merges:
        handles += ppl_ax.plot([m.epoch for m in merges],
                               [m.get("test/perplexity") for m in merges], "D", color="#a61c00",
                               mfc="white", label="test PPL (merge)")
    ppl_ax.set_ylabel("test PPL (reference completions, log scale)")
    ax.set_xlabel("epoch")
    if summary.graded:
        handles += [Patch(color=c, label=t) for k, (c, t) in STAGE_COLOURS.items()
                    if k in {lab.label for lab in summary.labels}]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2,
              fontsize=8, frameon=False)
    title = "Learning dynamics" if summary.graded else "Learning dynamics (ungraded task)"
    ax.set_title(f"{title}: {Path(summary.run_dir).name}")
    fig.tight_layout()
    return fig


def plot_dynamics(summary, out: str | Path) -> Path:
    """Test accuracy (graded runs) and test PPL of the reference completions against epoch,
    over the stage colours; merged checkpoints as separate markers. Test PPL is on a log axis
    scaled to the fine-tuned checkpoints, with the base model (step 0) shown apart."""
    return _save(dynamics_figure(summary), out)


def diversity_panels(summary) -> list[tuple[str, str, dict]]:
    """(title, key, settings) of the diversity measures this run has."""
    k = summary.k_samples
    panels = [("first-token entropy", "test/first_token_entropy", {}),
              (f"distinct@{k}", "test/distinct_fraction", {"k": k, "first_line": False}),
              (f"distinct openings@{k}", "test/distinct_fraction", {"k": k, "first_line": True}),
              (f"self-BLEU of {k} samples", "test/self_bleu", {"k": k})]
    return [p for p in panels if any(r.has(p[1], **p[2]) for r in summary.rows)]


def diversity_figure(summary):
    """The diversity panels as one figure, or None when the run has none."""
    panels = diversity_panels(summary)
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    axes = [axes] if len(panels) == 1 else axes
    x = [r.epoch for r in summary.rows]
    for ax, (title, key, settings) in zip(axes, panels):
        ax.plot(x, summary.column(key, **settings), "o-")
        direction = get_metric(key.split("/", 1)[1]).more_memorized_when
        ax.set_title(title + (f"\n({direction} = more memorized)" if direction else ""),
                     fontsize=9)
        ax.set_xlabel("epoch")
    fig.tight_layout()
    return fig


def plot_diversity(summary, out: str | Path) -> Path | None:
    fig = diversity_figure(summary)
    return None if fig is None else _save(fig, out, dpi=110)


def figure_data_uri(fig, dpi: int = 110) -> str:
    """A figure as an inline PNG (`data:image/png;base64,...`), for self-contained HTML; the
    figure is closed."""
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def write_plots(summary, folder: str | Path) -> Path:
    """The run's plots (dynamics, diversity) into `folder`; returns the folder."""
    folder = Path(folder)
    plot_dynamics(summary, folder / "dynamics.png")
    plot_diversity(summary, folder / "diversity.png")
    return folder
