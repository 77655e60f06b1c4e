"""`finemem demo`, `finemem reproduce EXPERIMENT` and `finemem sweep` (finemem.experiments)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from finemem.cli import common


def register(app: typer.Typer) -> None:
    from finemem.experiments import experiment_names, get_experiment

    @app.command()
    def demo(run_dir: Path = typer.Option(None, help="where the demo run goes (default "
                                                     "runs/demo, with --model runs/demo-real)"),
             force: bool = typer.Option(False, help="start the demo run over"),
             model: Optional[str] = typer.Option(
                 None, help="a real pretrained model (e.g. smollm2-135m, fetched when "
                            "missing): LoRA on chat-formatted data, audited for membership "
                            "and extraction (finemem/experiments/demo_real.yaml)"),
             device: Optional[str] = common.device(),
             progress: bool = common.progress(),
             quiet: bool = common.quiet(),
             set_: list[str] = common.sets()) -> None:
        """Build builtin:tiny, fine-tune arith at a high learning rate, audit every checkpoint,
        print the stage table, the checkpoint to ship and what it leaks, plot the learning
        dynamics and write the HTML report (its path is printed last).

        Example: finemem demo --run-dir runs/demo

        Example: finemem demo --model smollm2-135m"""
        from finemem.cli.train_cmd import parse_sets

        if model is not None:
            get_experiment("demo-real").run(run_dir or Path("runs/demo-real"), force=force,
                                            model=model)
            return
        get_experiment("demo").run(run_dir or Path("runs/demo"), force=force, device=device,
                                   progress=progress, quiet=quiet, overrides=parse_sets(set_))

    names = experiment_names(reproducible=True)

    @app.command()
    def reproduce(experiment: str = typer.Argument(..., help=" | ".join(names)),
                  out: Path = typer.Option(Path("runs/reproduce"), help="folder for the runs"),
                  doc: Path = typer.Option(Path("docs/REPLICATION.md"), help="report to write"),
                  settings: Optional[Path] = typer.Option(
                      None, help="your settings YAML in place of the shipped one (same keys; "
                                 "e.g. task-disparity on your own files: tasks, and "
                                 "run.data.train.source: 'data/{task}.jsonl')"),
                  model: Optional[str] = typer.Option(
                      None, help="a real model for every run (a name such as smollm2-135m, a "
                                 "folder or a .gguf): the shipped settings sized for a "
                                 "~100M-parameter model on a CPU; runs go to OUT/<model>, the "
                                 "report to its own section of the doc"),
                  device: Optional[str] = common.device(),
                  progress: bool = common.progress(),
                  quiet: bool = common.quiet(),
                  set_: list[str] = common.sets(),
                  ) -> None:
        """Run a longer experiment on the built-in setup (or `--model`, a real one) and write
        its report (docs/REPLICATION.md). A rerun reuses finished runs and audits.

        Example: finemem reproduce over-memorization
        Example: finemem reproduce lora-vs-full --model smollm2-135m"""
        from finemem.errors import UserError

        exp = get_experiment(experiment)  # an unknown name: "Did you mean ...?"
        if not exp.reproducible:
            how = f" (it runs with `{exp.command}`)" if exp.command else ""
            raise UserError(f"experiment '{experiment}' is not one `finemem reproduce` runs"
                            f"{how}; reproducible: {', '.join(names)}", field="experiment")
        exp.settings_path = settings
        exp.model = model
        # the shared options: --set and --device become config keys of each of its runs
        exp.overrides = common.config_overrides(set_, device)
        exp.progress, exp.quiet = progress, quiet
        exp.run(exp.out_dir(out), doc=doc)

    @app.command()
    def sweep(config: Path = typer.Option(..., help="base run config (YAML)"),
              grid: Optional[List[str]] = typer.Option(
                  None, help="KEY=V1,V2,... over any config key, values as YAML scalars, e.g. "
                             "training.lr=1e-4,3e-4; repeat for a product of grids"),
              lrs: Optional[str] = typer.Option(
                  None, help="comma-separated learning rates (= --grid training.lr=...)"),
              methods: Optional[str] = typer.Option(
                  None, help="comma-separated full,lora,head (= --grid training.method=...)"),
              ranks: Optional[str] = typer.Option(
                  None, help="LoRA ranks, e.g. 8,16,64 (= --grid training.lora.r=...)"),
              alphas: Optional[str] = typer.Option(
                  None, help="LoRA alphas (= --grid training.lora.alpha=...)"),
              sizes: Optional[str] = typer.Option(
                  None, help="built-in model sizes, e.g. test,tiny (= --grid "
                             "model=builtin:test,builtin:tiny)"),
              models: Optional[str] = typer.Option(
                  None, help="model folders or hub ids (= --grid model=...)"),
              duplication: Optional[str] = typer.Option(
                  None, help="times per epoch the same seeded subset (data.duplication."
                             "fraction of the examples) is repeated, e.g. 1,4,16 (= --grid "
                             "data.duplication.times=...)"),
              dp_epsilons: Optional[str] = typer.Option(
                  None, help="DP-SGD target epsilons, inf = no DP, e.g. 1,8,inf (= --grid "
                             "training.dp={epsilon: 1},{epsilon: 8},null)"),
              dedup: Optional[str] = typer.Option(
                  None, help="deduplication modes, e.g. none,near (= --grid data.dedup=...)"),
              probes: Optional[str] = typer.Option(
                  None, help="probes audited per cell, e.g. relaxed (likelihood is always "
                             "added; default: the config's or the default probes)"),
              epochs: Optional[int] = typer.Option(None, help="epochs per cell"),
              out: Path = typer.Option(Path("runs/sweep"), help="folder for the cells"),
              device: Optional[str] = common.device(),
              progress: bool = common.progress(),
              quiet: bool = common.quiet(),
              set_: list[str] = common.sets()) -> None:
        """Train and audit a grid over config keys, one run folder per cell (an interrupted
        sweep resumes); table of when each setting enters over-memorization, its best accuracy
        and recommended checkpoint, and the learning-rate recommendation. Default grid:
        training.lr=1e-4,3e-4,1e-3.

        Example: finemem sweep --config run.yaml --grid training.lr=1e-4,1e-3
        --grid training.method=full,lora

        Example: finemem sweep --config run.yaml --methods full,lora,head --duplication 1,4,16
        --probes relaxed && finemem compare runs/sweep"""
        from finemem.experiments.sweep import parse_grid, run_sweep, shortcut_specs

        specs = shortcut_specs(methods=methods, lrs=lrs, ranks=ranks, alphas=alphas,
                               sizes=sizes, models=models, duplication=duplication,
                               dp_epsilons=dp_epsilons, dedup=dedup) + \
            list(grid or [])
        if not specs:
            specs = ["training.lr=1e-4,3e-4,1e-3"]
        names = None if probes is None else [p.strip() for p in probes.split(",") if p.strip()]
        over = common.config_overrides(set_, device)
        run_sweep(config, grid=parse_grid(specs), epochs=epochs, out=out, probes=names,
                  overrides=over, progress=progress, quiet=quiet)

