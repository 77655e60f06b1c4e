"""`finemem demo` and `finemem reproduce over-memorization`."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(run_dir: Path = typer.Option(Path("runs/demo"), help="where the demo run goes"),
             force: bool = typer.Option(False, help="start the demo run over")) -> None:
        """Build builtin:tiny, fine-tune arith at a high learning rate, audit every checkpoint,
        print the stage table and the recommendation, and plot the learning dynamics."""
        from finemem.demo import run_demo

        run_demo(run_dir, force=force)

    @app.command()
    def reproduce(experiment: str = typer.Argument(..., help="over-memorization"),
                  out: Path = typer.Option(Path("runs/reproduce"), help="folder for the runs"),
                  doc: Path = typer.Option(Path("docs/REPLICATION.md"), help="report to write"),
                  ) -> None:
        """Run a longer experiment on the built-in setup and write docs/REPLICATION.md."""
        from finemem.errors import UserError

        if experiment != "over-memorization":
            raise UserError(f"unknown experiment '{experiment}'; available: over-memorization")
        from finemem.reproduce import reproduce_over_memorization

        reproduce_over_memorization(out, doc)
