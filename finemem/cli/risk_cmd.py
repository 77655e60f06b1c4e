"""`finemem risk RUN_DIR [--at CKPT]`: the per-record risk register."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def risk(run_dir: Path,
             at: Optional[str] = typer.Option(None, help="checkpoint name or step (default: "
                                                         "the last one audited)"),
             attack: str = typer.Option("loss", help="attack whose TPR / FPR at each record's "
                                                     "score is given (`finemem attacks`)"),
             out: Optional[Path] = typer.Option(None, help="export every row: a .csv, "
                                                           ".parquet or .json file"),
             top: int = typer.Option(15, help="rows printed"),
             show_secrets: bool = typer.Option(False, "--show-secrets",
                                               help="previews with secrets unmasked")) -> None:
        """One row per training record, most at risk first: each attack's percentile among
        the members, the extraction category, secrets found and extracted, times seen, the
        epoch it first became extractable, the attack's TPR / FPR at its score. Reads the
        store of `finemem audit RUN_DIR --probes membership,secrets` (and extraction).

        Example: finemem risk runs/demo --out runs/demo/report/risk.csv"""
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        from finemem.audit.attacks import get_attack
        from finemem.audit.risk import columns, risk_register, write_register

        get_attack(attack, field_name="--attack")
        reg = risk_register(run_dir, at=at, attack=attack, show_secrets=show_secrets)
        con = Console()
        cols = [c for c in columns(reg.rows) if c != "preview"][:10] + ["preview"]
        t = Table(title=f"Records most at risk at {reg.checkpoint}")
        for c in cols:
            t.add_column(c, overflow="fold", max_width=48 if c == "preview" else 14)
        for r in reg.rows[:top]:
            t.add_row(*["-" if r.get(c) is None else escape(str(r.get(c))) for c in cols])
        con.print(t)
        for n in reg.notes:
            con.print(escape(n))
        if out is not None:
            typer.echo(f"wrote {write_register(reg, out)} ({len(reg.rows)} rows)")
