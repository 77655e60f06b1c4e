"""`finemem risk RUN_DIR [--at CKPT]`: the per-record risk register."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _cell(v) -> str:
    from rich.markup import escape

    if v is None:
        return "-"
    return escape(f"{v:.3g}" if isinstance(v, float) else str(v))


def fit_columns(cols: list[str], rows: list[dict], *, first: list[str], width: int,
                preview: int = 24) -> tuple[list[str], list[str]]:
    """The columns that fit a terminal `width` (the `first` ones first, then in `cols` order;
    the preview gets what is left, at least `preview` characters) and those left out.

    >>> fit_columns(["record", "a_long_column", "pct_loss", "preview"],
    ...             [{"record": "r1", "a_long_column": 1, "pct_loss": 99.5}],
    ...             first=["record", "pct_loss"], width=50)
    (['record', 'pct_loss', 'preview'], ['a_long_column'])
    """
    order = [c for c in first if c in cols] + [c for c in cols
                                              if c not in first and c != "preview"]
    chosen, used, left = [], preview + 4, []
    for c in order:
        w = max([len(c)] + [len(_cell(r.get(c))) for r in rows]) + 3  # borders and padding
        if used + w > width and len(chosen) >= 2:
            left.append(c)
            continue
        chosen.append(c)
        used += w
    return chosen + (["preview"] if "preview" in cols else []), left


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
        shown = reg.rows[:top]
        first = ["record", f"pct_{attack}", "secrets_greedy", "extraction_category",
                 "tpr_at_score"]
        cols, left = fit_columns(columns(reg.rows), shown, first=first, width=con.width)
        t = Table(title=f"Records most at risk at {reg.checkpoint}")
        for c in cols:
            t.add_column(c, overflow="fold", no_wrap=c != "preview")
        for r in shown:
            t.add_row(*[_cell(r.get(c)) for c in cols])
        con.print(t)
        if left:
            con.print(escape(f"{len(left)} more columns ({', '.join(left)}): every column is "
                             "in the export, --out risk.csv"))
        for n in reg.notes:
            con.print(escape(n))
        if out is not None:
            typer.echo(f"wrote {write_register(reg, out)} ({len(reg.rows)} rows)")
