"""`finemem report RUN_DIR [RUN_DIR...]`: the self-contained HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def report(run_dirs: List[Path] = typer.Argument(..., metavar="RUN_DIR...",
                                                     help="audited run folder(s)"),
               out: Optional[Path] = typer.Option(
                   None, help="where to write the page, inside the (first) run folder "
                              "(default: RUN_DIR/report/index.html; several runs: "
                              "FIRST_RUN/report/compare.html)"),
               json_: bool = typer.Option(False, "--json", help="print {\"report\": path} as "
                                                                 "JSON"),
               show_secrets: bool = typer.Option(
                   False, "--show-secrets", help="quote training text with its secrets "
                                                 "(emails, card numbers, ...) unmasked")) -> None:
        """Write one self-contained HTML page (inline plots, no network) from the results
        store: the stage table, the recommended checkpoint and why, the learning-dynamics
        plot, every probe's section and every stored metric. Several runs: a comparison page,
        plus each run's own report.

        Example: finemem report runs/demo  (then open runs/demo/report/index.html)

        Example: finemem report runs/sweep/lr=1e-4 runs/sweep/lr=1e-3 --out report/compare.html"""
        from finemem.report.html import write_report

        path = write_report(run_dirs, out=out, show_secrets=show_secrets)
        if json_:
            import json

            typer.echo(json.dumps({"report": str(path)}))
        else:
            typer.echo(f"report: {path}")
