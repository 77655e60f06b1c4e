"""`finemem train --config run.yaml [flags]`: fine-tune and keep every checkpoint.

Flags override the file (`--lr 3e-4`, or any key with `--set training.epochs=5`). Rerunning on
the same run folder resumes an interrupted run; a finished run is left as it is.

Before anything is written, every eval set is loaded and checked (an error names the set,
`data.eval.<name>`, and the config file) and warnings (an eval set overlapping the training
data, no `test` set, ...) are printed to stderr. Local paths are made absolute (against the
current directory) so the run folder's config.yaml works from anywhere.
"""

from __future__ import annotations

from typing import Optional

import typer
import yaml

from finemem.cli import common

from finemem.errors import UserError


def parse_sets(items: list[str]) -> dict:
    """['training.epochs=5', 'data.train.n=100'] -> {'training.epochs': 5, ...} (YAML values)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects key=value, got '{item}'", field="--set")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UserError(f"--set {key}: cannot parse value '{value}'", field=key) from None
    return out


def print_summary(summary: dict, *, quiet: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if summary["already_complete"]:
        console.print(f"[bold]run is already complete[/bold]: {summary['run_dir']} "
                      f"({len(summary['checkpoints'])} checkpoints); nothing to do")
        return
    if summary["resumed_from"]:
        console.print(f"resumed from {summary['resumed_from']}")
    if not quiet:
        table = Table(title="train loss per epoch", show_edge=False)
        table.add_column("epoch", justify="right")
        table.add_column("loss", justify="right")
        for i, loss in enumerate(summary["loss_per_epoch"], 1):
            table.add_row(str(i), f"{loss:.4f}")
        console.print(table)
    ck = summary["checkpoints"]
    shown = ", ".join(ck) if len(ck) <= 6 else f"{', '.join(ck[:3])}, ..., {', '.join(ck[-2:])}"
    console.print(f"checkpoints written: {len(ck)} ({shown})")
    console.print(f"run folder: [bold]{summary['run_dir']}[/bold]")
    stop = summary.get("stopped_early")
    if stop:
        console.print(f"[yellow]stopped early[/] at {stop['checkpoint']} (step {stop['step']}): "
                      f"{stop['overmemorized_in_a_row']} over-memorized checkpoints in a row; "
                      f"ship [bold]{stop['ship']}[/bold]")


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_command(
        config: str = typer.Option(..., "--config", "-c", help="run config YAML"),
        run_dir: Optional[str] = typer.Option(None, "--run-dir", help="override run_dir"),
        model: Optional[str] = typer.Option(None, "--model", help="override model"),
        method: Optional[str] = typer.Option(None, "--method", help="full | lora | head"),
        lr: Optional[float] = typer.Option(None, "--lr", help="learning rate"),
        epochs: Optional[int] = typer.Option(None, "--epochs"),
        max_steps: Optional[int] = typer.Option(None, "--max-steps"),
        batch_size: Optional[int] = typer.Option(None, "--batch-size"),
        seed: Optional[int] = typer.Option(None, "--seed"),
        device: Optional[str] = common.device(),
        set_: list[str] = common.sets(),
        quiet: bool = common.quiet(),
        force: bool = typer.Option(False, "--force",
                                   help="delete a run folder holding another config"),
        progress: bool = common.progress(),
        num_processes: int = typer.Option(
            1, "--num-processes", help="train with DDP on this many processes (started with "
                                       "`accelerate launch --multi_gpu`; gloo on a CPU); the "
                                       "global batch stays training.batch_size"),
    ) -> None:
        """Fine-tune a model (full, LoRA or head-only) and keep every checkpoint.

        Example: finemem train --config run.yaml --method lora --lr 3e-4

        Example: finemem train --config run.yaml --num-processes 2"""
        if num_processes != 1:
            from finemem.distributed import launch

            args = ["train", "--config", config, *(["--force"] if force else []),
                    *(["--quiet"] if quiet else []),
                    "--progress" if progress else "--no-progress"]
            for flag, v in (("--run-dir", run_dir), ("--model", model), ("--method", method),
                            ("--device", device),
                            ("--lr", lr), ("--epochs", epochs), ("--max-steps", max_steps),
                            ("--batch-size", batch_size), ("--seed", seed)):
                args += [flag, str(v)] if v is not None else []
            for item in set_:
                args += ["--set", item]
            raise typer.Exit(launch(num_processes, args))
        from finemem.config import load_config
        from finemem.train import train

        flags = {"run_dir": run_dir, "model": model, "device": device,
                 "training.method": method,
                 "training.lr": lr, "training.epochs": epochs,
                 "training.max_steps": max_steps, "training.batch_size": batch_size,
                 "training.seed": seed}
        overrides = {**{k: v for k, v in flags.items() if v is not None}, **parse_sets(set_)}
        from finemem.audit.evalsets import check_eval_sets

        from finemem.distributed import is_main

        cfg = load_config(config, overrides=overrides).resolved()
        for warning in check_eval_sets(cfg, config_source=config) if is_main() else ():
            typer.echo(f"warning: {warning}", err=True)
        summary = train(cfg, force=force, progress=progress)
        if is_main():  # under `accelerate launch`, one summary
            print_summary(summary, quiet=quiet)
