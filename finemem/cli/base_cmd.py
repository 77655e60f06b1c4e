"""`finemem base build --size tiny` and `finemem base list`."""

from __future__ import annotations

from typing import Optional

import typer

from finemem.cli import common
from finemem.models.base import SIZES


def register(app: typer.Typer) -> None:
    base_app = typer.Typer(help="The self-built base models (builtin:SIZE).",
                           no_args_is_help=True)

    @base_app.command("build")
    def build(size: str = typer.Option("tiny", help=" | ".join(SIZES)),
              force: bool = typer.Option(False, help="rebuild even if cached"),
              device: Optional[str] = common.device(),
              progress: bool = common.progress(),
              quiet: bool = common.quiet(),
              set_: list[str] = common.sets()) -> None:
        """Train the tokenizer and pretrain the base model of SIZE; cached in $FINEMEM_HOME.
        `--set` takes keys of the size's spec (hidden, layers, steps, ...): such a base gets
        its own folder, which a run config's `model:` then names. Prints the folder.

        Example: finemem base build --size tiny

        Example: finemem base build --size test --set steps=80 --quiet"""
        import json

        from finemem.cli.train_cmd import parse_sets
        from finemem.models.base import build_base, check_size

        path = build_base(check_size(size, field="--size"), force=force, progress=progress,
                          device=device, overrides=parse_sets(set_))
        if not quiet:
            info = json.loads((path / "finemem_base.json").read_text())
            typer.echo(f"builtin:{size}: {info['n_params']} parameters, final pretraining "
                       f"loss {info['final_loss']}")
        typer.echo(path)

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
