"""Terminal tables (rich) for audited runs. Column arrows come from the metric registry
(`higher_is_better`), never from the name."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from finemem.metrics.registry import get_metric

STAGE_STYLE = {"underfit": "red", "healthy": "green", "over-memorized": "yellow",
               "overfit": "magenta", "ungraded": "dim"}


def _fmt(v: float, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def arrow(metric: str) -> str:
    """'↑' when higher is better for this registered metric, '↓' otherwise."""
    return "↑" if get_metric(metric).higher_is_better else "↓"


def _columns(summary) -> list[tuple[str, str, dict, int]]:
    """(header, key, settings, digits) of the optional columns this run has."""
    k = summary.k_samples
    cols = [("train PPL", "train/perplexity", {}, 3),
            ("OOD acc", "ood/answer_accuracy", {}, 3),
            ("1st-tok H", "test/first_token_entropy", {}, 2),
            (f"distinct@{k}", "test/distinct_fraction", {"k": k, "first_line": False}, 2),
            (f"open@{k}", "test/distinct_fraction", {"k": k, "first_line": True}, 2)]
    rows = summary.rows + summary.merges
    return [(f"{h} {arrow(key.split('/')[1])}", key, s, d) for h, key, s, d in cols
            if any(r.has(key, **s) for r in rows)]


def stage_table(summary) -> Table:
    """One row per checkpoint (merges after the trajectory): test accuracy with its interval
    (graded runs), test PPL and its ratio to the running minimum, the optional columns the
    run has, and the stage."""
    t = Table(title=f"Stages of {summary.run_dir}", show_lines=False)
    acc_col = [f"test acc {arrow('answer_accuracy')} [95% CI]"] if summary.graded else []
    extra = _columns(summary)
    # test PPL = PPL of the reference completions; x min = its ratio to the running minimum
    # (the stage rule's quantity); 1st-tok H = entropy of the first generated token;
    # open@k = distinct first lines among k samples
    for col in ("checkpoint", "epoch", *acc_col, f"test PPL {arrow('perplexity')}", "x min",
                *(h for h, *_ in extra), "stage"):
        t.add_column(col, justify="right" if col not in ("checkpoint", "stage") else "left")
    rec = summary.recommendation.name
    for r, lab in zip(summary.rows + summary.merges, summary.labels + summary.merge_labels):
        name = r.name + (" (merge)" if r.merged else "") + ("  <- ship" if r.name == rec else "")
        acc = []
        if summary.graded:
            a = r.find("test/answer_accuracy")
            acc = [f"{a['value']:.3f} [{a['lo']:.2f},{a['hi']:.2f}]"]
        t.add_row(name, _fmt(r.epoch, 1), *acc, _fmt(r.get("test/perplexity")),
                  _fmt(lab.ppl_ratio, 2), *(_fmt(r.get(key, **s), d) for _, key, s, d in extra),
                  f"[{STAGE_STYLE[lab.label]}]{lab.label}[/]")
    return t


def print_summary(summary, console: Console | None = None) -> None:
    console = console or Console()
    if not console.is_terminal:
        console.width = max(console.width, 180)  # logs and pipes: do not squeeze the table
    console.print(stage_table(summary))
    if not summary.graded:
        console.print("[dim]No graded answers in the test set: no accuracy and no stages; the "
                      "recommendation uses test PPL.[/]")
    console.print(f"[bold]Recommendation:[/] {summary.recommendation.explanation}")


def print_grid(grid, console: Console | None = None) -> None:
    """A report section's `Grid` as a rich table, then its notes."""
    console = console or Console()
    t = Table(title=grid.title, show_edge=False)
    for i, h in enumerate(grid.headers):
        t.add_column(h, justify="left" if i == 0 else "right")
    for r in grid.rows:
        t.add_row(*r)
    if not console.is_terminal:
        console.width = max(console.width, 160)
    console.print(t)
    for n in grid.notes:
        console.print(n, highlight=False)
