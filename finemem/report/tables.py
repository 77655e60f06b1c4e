"""Terminal tables (rich) for audited runs."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

STAGE_STYLE = {"underfit": "red", "healthy": "green", "over-memorized": "yellow",
               "overfit": "magenta"}


def _fmt(v: float, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def stage_table(summary) -> Table:
    rows = summary.rows
    k_keys = sorted({k for r in rows for k in r.metrics
                     if k.startswith(("test/distinct@", "test/distinct_openings@"))})
    t = Table(title=f"Stages of {summary.run_dir}", show_lines=False)
    for col in ("checkpoint", "epoch", "test acc [95% CI]", "test PPL", "x min", "train PPL",
                "OOD acc", "1st-tok H", *(k.split('/')[1].replace("distinct_openings", "open")
                                               for k in k_keys), "stage"):
        # columns: test PPL = PPL of the reference solutions; x min = its ratio to the running
        # minimum (the stage rule's quantity); 1st-tok H = entropy of the first generated token;
        # open@k = distinct first lines among k samples
        t.add_column(col, justify="right" if col not in ("checkpoint", "stage") else "left")
    rec = summary.recommendation.name
    for r, lab in zip(rows, summary.labels):
        a = r.metrics["test/accuracy"]
        ratio = getattr(lab, "ppl_ratio", math.nan)
        name = r.name + ("  <- ship" if r.name == rec else "")
        t.add_row(name, _fmt(r.epoch, 1), f"{a['value']:.3f} [{a['lo']:.2f},{a['hi']:.2f}]",
                  _fmt(r.get("test/ppl")), _fmt(ratio, 2), _fmt(r.get("train/ppl")),
                  _fmt(r.get("ood/accuracy")), _fmt(r.get("test/first_token_entropy"), 2),
                  *(_fmt(r.get(k), 2) for k in k_keys),
                  f"[{STAGE_STYLE[lab.label]}]{lab.label}[/]")
    return t


def print_summary(summary, console: Console | None = None) -> None:
    console = console or Console()
    if not console.is_terminal:
        console.width = max(console.width, 150)  # logs and pipes: do not squeeze the table
    console.print(stage_table(summary))
    console.print(f"[bold]Recommendation:[/] {summary.recommendation.explanation}")
