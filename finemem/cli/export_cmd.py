"""`finemem export RUN_DIR --format csv|parquet|json` and `finemem export-model CHECKPOINT
OUT_DIR` (finemem.export)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def export(run_dir: Path = typer.Argument(..., help="audited run folder"),
               format: str = typer.Option("csv", "--format", "-f", help="csv | parquet | json"),
               out: Path = typer.Option(Path("export"), help="folder inside the run folder"),
               json_: bool = typer.Option(False, "--json", help="print the files written as "
                                                                 "JSON")) -> None:
        """Export the run's per-checkpoint metrics and per-example rows (csv and parquet: two
        tables, metrics and examples; json: one document with a schema name and version,
        described in finemem/export.py and docs/METRICS.md).

        Example: finemem export runs/demo --format parquet  ->  runs/demo/export/*.parquet"""
        from finemem.export import export_results

        files = export_results(run_dir, format, out=out)
        if json_:
            import json

            typer.echo(json.dumps({"files": [str(f) for f in files]}))
        else:
            for f in files:
                typer.echo(f"wrote {f}")

    @app.command("export-model")
    def export_model_(checkpoint: Path = typer.Argument(
                          ..., help="a checkpoint folder (RUN_DIR/checkpoints/step-...), or an "
                                    "audited run folder for its recommended checkpoint"),
                      out_dir: Path = typer.Argument(..., help="the model folder to write"),
                      dtype: str = typer.Option("auto", help="auto (float32), float32, "
                                                             "bfloat16 or float16"),
                      force: bool = typer.Option(False, help="replace a non-empty OUT_DIR"),
                      ) -> None:
        """Write a standalone Hugging Face model folder for a checkpoint: full weights, a LoRA
        adapter merged into its base, or a head-only checkpoint in its base with the head
        untied from the input embeddings (a tied model such as GPT-2 would otherwise load
        the fine-tuned head into its embeddings too). Load it with plain transformers:
        AutoModelForCausalLM.from_pretrained(OUT_DIR).

        Example: finemem export-model runs/demo ship/   (the recommended checkpoint)

        Example: finemem export-model runs/demo/checkpoints/step-000120 ship/"""
        from finemem.export import export_model

        typer.echo(f"wrote {export_model(checkpoint, out_dir, force=force, dtype=dtype)}")
