"""`finemem audit | probes | recommend | merge`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from finemem.cli import common


def register(app: typer.Typer) -> None:
    @app.command()
    def audit(run_dir: Path, probes: Optional[str] = typer.Option(
                  None, help="comma-separated probes to run (default: audit.probes of the run's "
                             "config, else likelihood,overmem); `finemem probes` lists them"),
              checkpoints: Optional[str] = typer.Option(
                  None, help="which checkpoints (default: all): comma-separated names, last, "
                             "best, recommended, every:N, steps:A-B; best / recommended first "
                             "run likelihood,overmem where missing. The base (step 0) is "
                             "kept unless --no-base"),
              base: bool = typer.Option(True, "--base/--no-base",
                                        help="audit the base model (step 0) too"),
              device: Optional[str] = common.device(),
              workers: Optional[int] = typer.Option(
                  None, help="processes to split the checkpoints over (default: "
                             "audit.workers of the run's config, else 1)"),
              set_: list[str] = common.sets(),
              quiet: bool = common.quiet(),
              progress: bool = common.progress(),
              num_processes: int = typer.Option(
                  1, "--num-processes", help="split every checkpoint's examples over this many "
                                             "processes (`accelerate launch --multi_gpu`)")
              ) -> None:
        """Run the probes on every checkpoint of a run (the base as step 0, and merges), or on
        those --checkpoints picks: each model is loaded once; results go to the run's store;
        then print the stage table and the recommendation and write plots to
        RUN_DIR/report/.

        Example: finemem audit runs/demo --probes extraction,attention

        Example: finemem audit runs/demo --checkpoints recommended,last --probes extraction"""
        import finemem.train  # noqa: F401  (hands the spv attack its training path)
        from finemem import distributed as ddp
        from finemem.audit import audit_run
        from finemem.cli.train_cmd import parse_sets

        if num_processes != 1:
            args = ["audit", str(run_dir), *(["--quiet"] if quiet else []),
                    "--progress" if progress else "--no-progress",
                    "--base" if base else "--no-base"]
            args += ["--device", device] if device else []
            args += ["--probes", probes] if probes else []
            args += ["--checkpoints", checkpoints] if checkpoints else []
            args += ["--workers", str(workers)] if workers is not None else []
            for item in set_:
                args += ["--set", item]
            raise typer.Exit(ddp.launch(num_processes, args))
        from finemem.config import load_config
        from finemem.errors import UserError

        names = [p.strip() for p in probes.split(",") if p.strip()] if probes else None
        acfg = None
        if set_:
            sets = parse_sets(set_)
            bad = [k for k in sets if not k.startswith("audit.")]
            if bad:
                raise UserError(f"--set {bad[0]}: finemem audit changes audit.* settings only "
                                "(the run's training settings are fixed)", field="--set")
            acfg = load_config(Path(run_dir) / "config.yaml", overrides=sets).resolved().audit
        ran = audit_run(run_dir, probes=names, device=device, workers=workers, audit_cfg=acfg,
                  checkpoints=checkpoints, base=base, progress=progress)
        if not ddp.is_main():  # under `accelerate launch`: one stage table
            return
        if not quiet:
            _show(run_dir, names or ran)
        _incomplete(run_dir)

    @app.command("probes")
    def probes_() -> None:
        """List the registered probes, what each measures and what it needs.

        Example: finemem probes"""
        from finemem.audit.probes import get_probe, probe_names

        for name in probe_names():
            p = get_probe(name)
            needs = f" (needs {', '.join(p.needs)})" if p.needs else ""
            default = "" if p.default else " [not run by default]"
            typer.echo(f"{name}: {p.description}{needs}{default}")

    @app.command("attacks")
    def attacks_() -> None:
        """List the registered membership attacks, their paper and what each needs beyond the
        audited model's scores (`audit.membership.attacks` picks them).

        Example: finemem attacks"""
        from finemem.audit.attacks import load_attacks

        for name, a in load_attacks().items():
            needs = f" (needs {', '.join(a.needs)})" if a.needs else ""
            default = "" if a.default else " [not run by default]"
            typer.echo(f"{name}: {a.description}; {a.paper}{needs}{default}")

    @app.command()
    def recommend(run_dir: Path, max_leakage: Optional[str] = typer.Option(
                      None, "--max-leakage", help="leakage budget, auc=0.6, tpr=0.1 (at 1% FPR) "
                      "or extraction=0.05: the most accurate checkpoint within it (needs "
                      "`finemem audit RUN_DIR --probes membership`)"),
                  attack: str = typer.Option("loss", help="attack whose AUC / TPR is the "
                                                          "leakage (`finemem attacks` lists "
                                                          "them)")) -> None:
        """Name the checkpoint to ship and explain why, from an audited run; with membership
        results, the accuracy-vs-leakage table (and RUN_DIR/report/leakage.png).

        Example: finemem recommend runs/demo"""
        from finemem.report.leakage import recommend_with_leakage

        recommend_with_leakage(run_dir, max_leakage, attack)
        _incomplete(run_dir)

    @app.command()
    def merge(ckpt_a: Path, ckpt_b: Path,
              alpha: float = typer.Option(0.5, help="weight of CKPT_A: alpha*A + (1-alpha)*B"),
              out: Optional[Path] = typer.Option(None, help="output folder (default: beside "
                                                            "CKPT_A, named merge-...)")) -> None:
        """Average two checkpoints of a run (full weights or LoRA adapters) into a new one.

        Example: finemem merge runs/demo/checkpoints/step-000100
        runs/demo/checkpoints/step-000400"""
        from finemem.models.merging import merge_run_checkpoints

        path = merge_run_checkpoints(ckpt_a, ckpt_b, alpha=alpha, out=out)
        typer.echo(f"wrote {path}")


def _incomplete(run_dir: Path) -> None:
    """Say (stderr) when the run's training stopped early: its checkpoints end before the
    planned last step."""
    from finemem.train.checkpoint import incomplete_note

    note = incomplete_note(run_dir)
    if note:
        typer.echo(f"warning: {note}", err=True)


def _show(run_dir: Path, probes: list[str]) -> None:
    """Each probe's headline in the terminal: the sections that registered one for it
    (`finemem.report.sections`: the stage table for likelihood / overmem, the membership
    table, the canaries per tier, the relaxed threshold curve, extraction, attention, the
    privacy audit beside the promised epsilon)."""
    from finemem.report.sections import print_probe_summaries

    print_probe_summaries(run_dir, probes)
