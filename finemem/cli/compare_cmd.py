"""`finemem compare RUN_DIR...`: runs side by side (finemem.analysis.compare.run_compare)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def compare(run_dirs: List[Path] = typer.Argument(..., metavar="RUN_DIR...",
                                                      help="run folders, or a sweep folder"),
                at: str = typer.Option("final", help="checkpoint of each run: recommended, "
                                                     "best, final or step-N"),
                out: Optional[Path] = typer.Option(None, help="folder for compare.csv, "
                                                   "compare_curves.csv and the plot (default: "
                                                   "beside the first run, compare/)"),
                threshold: Optional[float] = typer.Option(
                    None, help="cosine threshold of the relaxed metric, in [0, 1] (default: "
                               "audit.relaxed.threshold of the first run, 0.8)"),
                margin: float = typer.Option(0.10, help="largest task-performance gap still "
                                                        "comparable: test PPL relative, "
                                                        "accuracy absolute"),
                reference: Optional[str] = typer.Option(
                    None, help="run the reductions are against (default: the first full "
                               "fine-tuning run)")) -> None:
        """Line up runs (full vs LoRA vs head-only, a sweep's cells) at one checkpoint each:
        memorization (relaxed at the threshold, exact, verbatim; members, non-members, excess)
        with 95% intervals, task performance, and each run's relative reduction of
        memorization against the reference with a bootstrap interval. Runs that differ in
        task performance by more than the margin are flagged beside the numbers. Needs the
        extraction probe's results (`finemem audit RUN --probes likelihood,relaxed`).

        Example: finemem compare runs/full runs/lora runs/head --at final

        Example: finemem compare runs/sweep --at recommended --out runs/sweep/compare"""
        from finemem.analysis.compare import run_compare

        run_compare(run_dirs, at=at, out=out, threshold=threshold, margin=margin,
                    reference=reference)
