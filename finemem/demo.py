"""The demo: the over-memorization audit on the built-in arith task, end to end.

    finemem demo  ==  train(demo config) -> audit_run -> stage table, recommendation, plots

The demo's settings live in finemem/configs/demo_arith.yaml; docs/OVER_MEMORIZATION.md says
what it took to make the signature appear on a ~1M-parameter model.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import yaml
from rich.console import Console

from finemem.config import parse_config


def demo_config(run_dir: Path):
    text = resources.files("finemem.configs").joinpath("demo_arith.yaml").read_text("utf-8")
    raw = yaml.safe_load(text)
    raw["run_dir"] = str(run_dir)
    return parse_config(raw, source="demo_arith.yaml", text=text)


def signature(summary, *, ratio: float = 1.3, delta: float = 0.05) -> list:
    """The longest run of consecutive checkpoints with test PPL >= ratio x its running minimum
    while test accuracy stays within delta of the run's best (the issue's demo criterion)."""
    best = max(summary.column("test/accuracy"))
    run, longest = [], []
    for row, lab in zip(summary.rows, summary.labels):
        if lab.ppl_ratio >= ratio and row.get("test/accuracy") >= best - delta:
            run.append(row)
            longest = max(longest, run, key=len)
        else:
            run = []
    return longest


def run_demo(run_dir: Path, *, force: bool = False, console: Console | None = None) -> None:
    from finemem.audit import audit_run, summarize
    from finemem.models.load import resolve_model
    from finemem.report.plots import plot_diversity, plot_dynamics
    from finemem.report.tables import print_summary
    from finemem.train import train

    console = console or Console()
    t0 = time.time()
    cfg = demo_config(run_dir)
    console.rule("1/3  base model")
    console.print(f"{cfg.model} -> {resolve_model(cfg.model)}")
    console.rule("2/3  fine-tuning arith")
    train(cfg, force=force)
    console.rule("3/3  auditing every checkpoint")
    audit_run(run_dir)
    s = summarize(run_dir)
    print_summary(s, console)
    p = plot_dynamics(s, run_dir / "report" / "dynamics.png")
    plot_diversity(s, run_dir / "report" / "diversity.png")
    sig = signature(s)
    rec = next(r for r in s.rows if r.name == s.recommendation.name)
    if len(sig) >= 2:
        names = ", ".join(r.name for r in sig)
        console.print(f"[bold]Over-memorization signature:[/] {len(sig)} consecutive checkpoints "
                      f"({names}) have test PPL >= 1.3x its minimum with accuracy within 5 "
                      f"points of the best.")
        for key in ("test/first_token_entropy", "test/distinct@8", "test/distinct_openings@8"):
            over = sum(r.get(key) for r in sig) / len(sig)
            console.print(f"  {key.split('/')[1]}: {over:.3f} there vs {rec.get(key):.3f} at "
                          f"the recommended {rec.name}")
    else:
        console.print("[bold red]The over-memorization signature did not appear in this run[/] "
                      "(no two consecutive checkpoints with PPL >= 1.3x its minimum while "
                      "accuracy stays within 5 points of the best).")
    console.print(f"plots: {p.parent}    run folder: {run_dir}    "
                  f"time: {time.time() - t0:.0f} s")
