"""The `finemem` command line. Each command group lives in its own module and only calls
one public entry point of the library.

    finemem base build --size tiny
    finemem train --config run.yaml
    finemem audit RUN_DIR
"""

from __future__ import annotations

import errno
import importlib
import sqlite3
import sys

import typer

from finemem import faults
from finemem.errors import Interrupted, UserError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode="markdown",
                  help="Fine-tune language models and measure what they memorize.\n\n"
                       "Example: finemem demo  (train, audit, report on the built-in task)\n\n"
                       "Example: finemem train -c run.yaml && finemem audit runs/my-run && "
                       "finemem report runs/my-run\n\n"
                       "Example: finemem doctor  (what is installed, built and missing)")


def _print_version(value: bool) -> None:
    if value:
        from finemem import __version__

        typer.echo(f"finemem {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version,
                                       is_eager=True, help="Print finemem's version and exit.")
          ) -> None:
    """The group's own options (typer needs a callback to carry them); each command does its
    own work. Every command may read a run config, so the probes' settings (its `audit:`
    sections) are registered first."""
    from finemem.audit.probes import load_probes

    load_probes()


# Modules that register commands on `app` (each defines `register(app)`).
COMMAND_MODULES = ("config_cmd", "base_cmd", "train_cmd", "audit_cmd", "experiment_cmd",
                   "report_cmd", "export_cmd", "doctor_cmd", "canaries_cmd", "trajectories_cmd",
                   "compare_cmd", "risk_cmd", "models_cmd")


def _register() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"finemem.cli.{name}").register(app)


_register()


def main() -> None:
    faults.install_sigint()  # a Ctrl-C that a finalizer swallows still stops the command
    try:
        rv = app(standalone_mode=False, prog_name="finemem")
        # Non-standalone typer turns Ctrl-C into a returned 130 instead of raising it.
        if isinstance(rv, int) and rv:
            if rv == 130:
                typer.echo("aborted (interrupted); rerun the same command to resume", err=True)
            sys.exit(rv)
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except Interrupted as e:
        typer.echo(str(e), err=True)
        sys.exit(130)
    except (OSError, sqlite3.OperationalError) as e:  # a full disk, wherever it is hit
        if getattr(e, "errno", None) not in (errno.ENOSPC, errno.EDQUOT) and \
                not (isinstance(e, sqlite3.OperationalError) and "full" in str(e)):
            raise
        where = getattr(e, "filename", None) or "disk"
        typer.echo(f"error: {where}: disk full ({getattr(e, 'strerror', None) or e}); free "
                   "some space and rerun the same command: it resumes", err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as e:  # click usage errors come through here in non-standalone mode
        # typer >= 0.2x vendors click (typer._click), older typer uses click itself: match
        # the exceptions by what they carry, not by class
        if callable(getattr(e, "format_message", None)) and hasattr(e, "exit_code"):
            ctx = getattr(e, "ctx", None)
            cmd = ctx.command_path if ctx is not None else "finemem"
            typer.echo(f"error: {cmd}: {e.format_message()} (see `{cmd} --help`)", err=True)
            sys.exit(2)
        if type(e).__name__ == "Exit" and hasattr(e, "exit_code"):
            sys.exit(e.exit_code)
        raise
