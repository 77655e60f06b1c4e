"""`finemem compare RUN_DIR...`: runs side by side (loaded and compared by
`finemem.analysis.compare`, shown by `finemem.report.compare`)."""

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
        run_compare(run_dirs, at=at, out=out, threshold=threshold, margin=margin,
                    reference=reference)


def run_compare(paths, *, at: str = "final", out: Path | None = None,
                threshold: float | None = None, margin: float = 0.10,
                reference: str | None = None, console=None):
    """`finemem compare`: load, compare, print the table and notes, write CSV and plots;
    returns the `Comparison` (None when only the mitigation table applies)."""
    from rich.console import Console

    from finemem.analysis import tradeoff
    from finemem.analysis.compare import compare, expand_runs, load_side, run_labels
    from finemem.config import load_config
    from finemem.report.compare import plot_curves, table, write_csv

    console = console or Console()
    runs = expand_runs(paths)
    # issue 21 hook: mitigations (DP, dedup, ...) lined up by leakage and the privacy audit;
    # runs audited without the extraction probe get this table alone
    trade = [tradeoff.tradeoff_row(p, at, lab) for p, lab in zip(runs, run_labels(runs))]
    if any(tradeoff.has_tradeoff(r) for r in trade):
        if not console.is_terminal:
            console.width = max(console.width, 200)
        tradeoff.print_tradeoff(trade, console)
        out_t = Path(out) if out else Path(runs[0]).parent / "compare"
        console.print(f"wrote {tradeoff.write_tradeoff_csv(trade, out_t / 'tradeoff.csv')}")
        png = tradeoff.plot_tradeoff(trade, out_t / "tradeoff.png")
        if png:
            console.print(f"wrote {png}")
        if not all(tradeoff.has_extraction(p) for p in runs):
            return None
    sides = [load_side(p, at, lab) for p, lab in zip(runs, run_labels(runs))]
    if threshold is None:
        threshold = load_config(runs[0] / "config.yaml").audit.section("relaxed").threshold
    thresholds = load_config(runs[0] / "config.yaml").audit.section("relaxed").thresholds
    cmp = compare(sides, threshold=threshold, thresholds=thresholds, margin=margin,
                  reference=reference)
    if not console.is_terminal:
        console.width = max(console.width, 200)
    console.print(table(cmp))
    for n in cmp.notes:
        console.print(f"note: {n}")
    out = Path(out) if out else Path(runs[0]).parent / "compare"
    csv_path = write_csv(cmp, out / "compare.csv")
    png = plot_curves(cmp, out / "threshold_curves.png")
    (out / "notes.txt").write_text("\n".join(cmp.notes) + ("\n" if cmp.notes else ""))
    console.print(f"wrote {csv_path}, {csv_path.with_name('compare_curves.csv')}, {png}")
    return cmp
