"""The `finemem` command line. Each command group lives in its own module and only calls
one public entry point of the library.

    finemem base build --size tiny
    finemem train --config run.yaml
    finemem audit RUN_DIR
"""

from __future__ import annotations

import importlib
import sys

import typer

from finemem.errors import UserError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode="markdown",
                  help="Fine-tune language models and measure what they memorize.")

# Modules that register commands on `app` (each defines `register(app)`).
COMMAND_MODULES = ("config_cmd", "base_cmd", "train_cmd", "audit_cmd", "experiment_cmd")


def _register() -> None:
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"finemem.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"finemem.cli.{name}":
                continue  # command group not written yet
            raise
        mod.register(app)


_register()


def main() -> None:
    try:
        rv = app(standalone_mode=False)
        # Non-standalone typer turns Ctrl-C into a returned 130 instead of raising it.
        if isinstance(rv, int) and rv:
            if rv == 130:
                typer.echo("aborted (interrupted); rerun the same command to resume", err=True)
            sys.exit(rv)
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as e:  # click usage errors come through here in non-standalone mode
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(2)
        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        raise
