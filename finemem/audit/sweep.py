"""`finemem sweep`: train and audit a grid of learning rates x methods, one run folder per
cell, and tabulate when each setting enters over-memorization and its best accuracy.

The epoch axis of the grid is the checkpoint trajectory of each run (one checkpoint per epoch),
so a cell answers both "which learning rate" and "how many epochs".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from finemem.config import load_config


@dataclass
class Cell:
    method: str
    lr: float
    run_dir: str
    best_acc: float
    best_epoch: float
    onset_epoch: float | None  # first over-memorized epoch, None if never
    max_ppl_ratio: float
    recommended: str
    recommended_acc: float


def cell_dir(out: Path, method: str, lr: float) -> Path:
    return out / f"{method}-lr{lr:g}"


def run_sweep(config: Path, *, lrs: list[float], methods: list[str], epochs: int | None,
              out: Path, console: Console | None = None) -> list[Cell]:
    from finemem.audit import audit_run, summarize
    from finemem.train import train

    console = console or Console()
    cells = []
    for method in methods:
        for lr in lrs:
            rd = cell_dir(out, method, lr)
            over = {"run_dir": str(rd), "training.method": method, "training.lr": lr}
            if epochs:
                over["training.epochs"] = epochs
            cfg = load_config(config, overrides=over)
            console.rule(f"{method} lr={lr:g}")
            train(cfg)
            audit_run(rd)
            cells.append(cell_from_summary(summarize(rd), method, lr))
    table = sweep_table(cells)
    if not console.is_terminal:
        console.width = max(console.width, 120)  # logs and pipes: do not squeeze the table
    console.print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps([asdict(c) for c in cells], indent=1))
    console.print(lr_advice(cells))
    return cells


def cell_from_summary(s, method: str, lr: float) -> Cell:
    acc = s.column("test/accuracy")
    best = max(range(len(acc)), key=lambda i: acc[i])
    onset = next((r.epoch for r, lab in zip(s.rows, s.labels) if lab.label == "over-memorized"),
                 None)
    ratios = [lab.ppl_ratio for lab in s.labels]
    rec = s.recommendation
    rec_row = next(r for r in s.rows if r.name == rec.name)
    return Cell(method, lr, str(s.run_dir), acc[best], s.rows[best].epoch, onset, max(ratios),
                rec.name, rec_row.get("test/accuracy"))


def sweep_table(cells: list[Cell]) -> Table:
    t = Table(title="Sweep: when each setting enters over-memorization")
    for c in ("method", "lr", "best acc", "at epoch", "over-memorized from epoch",
              "max PPL / running min", "recommended", "its acc"):
        t.add_column(c)
    for c in cells:
        t.add_row(c.method, f"{c.lr:g}", f"{c.best_acc:.3f}", f"{c.best_epoch:g}",
                  "never" if c.onset_epoch is None else f"{c.onset_epoch:g}",
                  f"{c.max_ppl_ratio:.2f}", c.recommended, f"{c.recommended_acc:.3f}")
    return t


def lr_advice(cells: list[Cell]) -> str:
    """The learning rate to use: the best recommended accuracy; ties go to the setting that
    enters over-memorization latest (or never)."""
    def key(c: Cell):
        return (round(c.recommended_acc, 2), float("inf") if c.onset_epoch is None
                else c.onset_epoch)
    best = max(cells, key=key)
    onset = "never enters over-memorization" if best.onset_epoch is None else \
        f"enters over-memorization at epoch {best.onset_epoch:g}"
    return (f"Learning-rate recommendation: {best.method} at lr={best.lr:g} "
            f"(recommended checkpoint {best.recommended}, accuracy {best.recommended_acc:.3f}; "
            f"{onset}).")
