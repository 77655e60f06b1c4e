"""`finemem doctor`: what this installation has and lacks (finemem.cli)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def doctor(json_: bool = typer.Option(False, "--json", help="print the findings as JSON")
               ) -> None:
        """Check the installation: versions, the device an audit would use, the cache folder
        and which built-in base models are built, and what optional features lack (a browser
        for the report test, experiment trackers, TRL for the SFTTrainer callback).

        Example: finemem doctor --json"""
        from finemem.doctor import diagnose, render

        found = diagnose()
        if json_:
            import json

            typer.echo(json.dumps(found, indent=1))
        else:
            render(found)
