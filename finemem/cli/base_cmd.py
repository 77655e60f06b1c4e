"""`finemem base build --size tiny` and `finemem base list`."""

from __future__ import annotations

import typer

from finemem.models.base import SIZES


def register(app: typer.Typer) -> None:
    base_app = typer.Typer(help="The self-built base models (builtin:SIZE).",
                           no_args_is_help=True)

    @base_app.command("build")
    def build(size: str = typer.Option("tiny", help=" | ".join(SIZES)),
              force: bool = typer.Option(False, help="rebuild even if cached")) -> None:
        """Train the tokenizer and pretrain the base model of SIZE; cached in $FINEMEM_HOME.

        Example: finemem base build --size tiny"""
        from finemem.models.base import build_base, check_size

        typer.echo(build_base(check_size(size, field="--size"), force=force))

    @base_app.command("ship")
    def ship_(size: str = typer.Option("tiny", help=" | ".join(SIZES))) -> None:
        """Copy the cached base of SIZE into the package (finemem/models/shipped/) with its
        sha256 sums: a fresh $FINEMEM_HOME then loads it instead of pretraining. Rebuild
        first with `finemem base build --size SIZE --force`.

        Example: finemem base build --size tiny --force && finemem base ship --size tiny"""
        from finemem.models.base import check_size
        from finemem.models.shipped import ship

        typer.echo(ship(check_size(size, field="--size")))

    @base_app.command("list")
    def list_() -> None:
        """Show the cached base models.

        Example: finemem base list"""
        from finemem.home import finemem_home

        for d in sorted((finemem_home() / "base").glob("*")):
            if d.is_dir() and (d / "config.json").is_file():
                typer.echo(d)

    app.add_typer(base_app, name="base")
