"""`finemem config example|check`."""

from __future__ import annotations


import typer

from finemem.config import load_config


def example_yaml() -> str:
    """The example config, generated from the config models (finemem.cli.config_example)."""
    from finemem.cli.config_example import example_yaml as generate

    return generate()


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(help="Run configuration files.", no_args_is_help=True)

    @config_app.command("example")
    def example() -> None:
        """Print a fully commented example run config.

        Example: finemem config example > run.yaml"""
        typer.echo(example_yaml(), nl=False)

    @config_app.command("check")
    def check(path: str) -> None:
        """Validate a run config and print it with defaults filled in.

        Example: finemem config check run.yaml"""
        typer.echo(load_config(path).to_yaml(), nl=False)

    app.add_typer(config_app, name="config")
