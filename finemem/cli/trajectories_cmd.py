"""`finemem trajectories RUN_DIR [--out rows.csv]`: when each audited example became
memorized, from stored results (finemem.analysis.trajectories)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def trajectories(run_dir: Path, out: Optional[Path] = typer.Option(
            None, help="CSV of per-example rows (default: RUN_DIR/report/trajectories.csv)")
            ) -> None:
        """Per audited training example (the membership and canaries probes'): the first
        checkpoint where greedy decoding reproduces it, whether it was forgotten later, and
        its loss at every checkpoint. Prints how many were memorized by each checkpoint.

        Example: finemem trajectories runs/my-run --out runs/my-run/trajectories.csv"""
        from rich.console import Console
        from rich.table import Table

        from finemem.analysis.trajectories import (load_trajectories, summarize_trajectories,
                                                   write_csv)

        ckpts, trajs = load_trajectories(run_dir)
        s = summarize_trajectories(ckpts, trajs)
        t = Table(title=f"memorization trajectories ({s['examples']} examples)",
                  show_edge=False)
        for col in ("checkpoint", "epoch", "newly extractable", "extractable so far"):
            t.add_column(col, justify="left" if col == "checkpoint" else "right")
        for c in s["by_checkpoint"]:
            t.add_row(c["name"], f"{c['epoch']:.2f}", str(c["new"]), str(c["cumulative"]))
        console = Console()
        console.print(t)
        splits = sorted({x.split for x in trajs})
        for sp in splits:
            sub = summarize_trajectories(ckpts, [x for x in trajs if x.split == sp])
            console.print(f"{sp}: {sub['memorized']} of {sub['examples']} became extractable "
                          f"({sub['forgotten']} forgotten by the last checkpoint), "
                          f"{sub['never']} never")
        path = write_csv(out or Path(run_dir) / "report" / "trajectories.csv", ckpts, trajs)
        console.print(f"rows: {path}")
