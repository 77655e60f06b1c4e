"""`finemem audit | recommend | merge | sweep`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def audit(run_dir: Path, device: str = typer.Option("auto", help="auto, cpu, cuda or mps"),
              quiet: bool = typer.Option(False, help="no stage table at the end")) -> None:
        """Score every checkpoint of a run (and the base as step 0); fill the results store;
        print the stage table and the recommendation; write plots to RUN_DIR/report/."""
        from finemem.audit import audit_run

        audit_run(run_dir, device=device)
        if not quiet:
            _show(run_dir)

    @app.command()
    def recommend(run_dir: Path) -> None:
        """Name the checkpoint to ship and explain why, from an audited run."""
        from finemem.audit import summarize

        typer.echo(summarize(run_dir).recommendation.explanation)

    @app.command()
    def merge(ckpt_a: Path, ckpt_b: Path,
              alpha: float = typer.Option(0.5, help="weight of CKPT_A: alpha*A + (1-alpha)*B"),
              out: Optional[Path] = typer.Option(None, help="output folder (default: beside "
                                                            "CKPT_A, named merge-...)")) -> None:
        """Average two checkpoints of a run (full weights or LoRA adapters) into a new one."""
        from finemem.audit.merging import merge_run_checkpoints

        path = merge_run_checkpoints(ckpt_a, ckpt_b, alpha=alpha, out=out)
        typer.echo(f"wrote {path}")

    @app.command()
    def sweep(config: Path = typer.Option(..., help="base run config (YAML)"),
              lrs: str = typer.Option("1e-4,3e-4,1e-3", help="comma-separated learning rates"),
              methods: str = typer.Option("full", help="comma-separated: full,lora,head"),
              epochs: Optional[int] = typer.Option(None, help="epochs per cell"),
              out: Path = typer.Option(Path("runs/sweep"), help="folder for the cells")) -> None:
        """Train and audit a grid of learning rates x methods; table of when each setting
        enters over-memorization and its best accuracy (the learning-rate recommendation)."""
        from finemem.audit.sweep import run_sweep

        run_sweep(config, lrs=[float(x) for x in lrs.split(",")], methods=methods.split(","),
                  epochs=epochs, out=out)


def _show(run_dir: Path) -> None:
    from finemem.audit import summarize
    from finemem.report.plots import plot_diversity, plot_dynamics
    from finemem.report.tables import print_summary

    s = summarize(run_dir)
    print_summary(s)
    p = plot_dynamics(s, Path(run_dir) / "report" / "dynamics.png")
    plot_diversity(s, Path(run_dir) / "report" / "diversity.png")
    typer.echo(f"plots: {p.parent}")
