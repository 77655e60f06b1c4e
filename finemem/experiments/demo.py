"""The demo: the over-memorization audit on the built-in arith task, end to end.

    finemem demo  ==  train(demo config) -> audit_run -> stage table, recommendation, plots

The demo's settings live beside this module in demo.yaml; docs/OVER_MEMORIZATION.md says
what it took to make the signature appear on a ~1M-parameter model.
"""

from __future__ import annotations

import time
from pathlib import Path

from finemem.experiments import Experiment, load_settings, register_experiment

SIGNATURE_RATIO = 1.3   # test PPL >= this x its running minimum ...
SIGNATURE_DELTA = 0.05  # ... while point accuracy stays within this of the best
# The leakage line's attack (`finemem audit --probes membership` runs all six), measured in
# the same pass as the stage table's probes, on every checkpoint: the most accurate one within
# the default budget can be any of them.
LEAKAGE_ATTACKS = ("loss",)


def demo_config(run_dir: Path, overrides: dict | None = None):
    """The demo's run config (demo.yaml) for `run_dir`; `overrides` are `--set` keys."""
    from finemem.config import parse_config, set_path

    raw, text = load_settings(DemoExperiment.settings_file)
    raw["run_dir"] = str(run_dir)
    for k, v in (overrides or {}).items():
        set_path(raw, k, v)
    return parse_config(raw, source=DemoExperiment.settings_file, text=text)


def signature(summary, *, ratio: float = SIGNATURE_RATIO, delta: float = SIGNATURE_DELTA) -> list:
    """The rows of the longest run of consecutive checkpoints with test PPL >= ratio x its
    running minimum while test accuracy stays within delta of the run's best (the issue's demo
    criterion; `finemem.analysis.stages.longest_stretch`)."""
    from finemem.analysis.stages import longest_stretch
    from finemem.analysis.summary import ACC

    idx = longest_stretch(summary.column(ACC), [lab.ppl_ratio for lab in summary.labels],
                          ratio=ratio, delta=delta)
    return [summary.rows[i] for i in idx]


def signature_measures(k: int) -> list[tuple[str, str, dict]]:
    """(label, metric key, settings) of what the demo sets side by side at the signature."""
    return [("first_token_entropy", "test/first_token_entropy", {}),
            (f"distinct@{k}", "test/distinct_fraction", {"k": k, "first_line": False}),
            (f"distinct_openings@{k}", "test/distinct_fraction", {"k": k, "first_line": True})]


@register_experiment("demo")
class DemoExperiment(Experiment):
    description = ("fine-tune builtin:tiny on arith at a high learning rate, audit every "
                   "checkpoint, show the over-memorization signature")
    settings_file = "demo.yaml"
    command = "finemem demo"

    def configs(self, out: Path) -> dict:
        return {"demo": demo_config(out)}

    def run(self, out: Path, *, force: bool = False, console=None, **opts) -> None:
        run_demo(out, force=force, console=console, **opts)


def run_demo(run_dir: Path, *, force: bool = False, console=None, device: str | None = None,
             progress: bool = True, quiet: bool = False, overrides: dict | None = None) -> None:
    from rich.console import Console

    from finemem.audit import audit_run, summarize
    from finemem.audit.probes import resolve_probes
    from finemem.models.load import resolve_model
    from finemem.report.plots import write_plots
    from finemem.report.tables import print_summary
    from finemem.train import train

    console = console or Console()
    t0 = time.time()
    times = {}
    cfg = demo_config(run_dir, overrides)
    console.rule("1/4  base model")
    console.print(f"{cfg.model} -> {resolve_model(cfg.model)}")
    times["base"] = time.time() - t0
    console.rule("2/4  fine-tuning arith")
    train(cfg, force=force, progress=progress)
    times["training"] = time.time() - t0 - sum(times.values())
    console.rule("3/4  auditing every checkpoint (stage table and membership)")
    # one pass: each checkpoint is loaded once for likelihood, overmem and membership
    audit_run(run_dir, probes=[*resolve_probes(None), "membership"], device=device,
              progress=progress, audit_cfg=leakage_audit_config(run_dir))
    s = summarize(run_dir)
    if quiet:
        console.print(f"[bold]Recommendation:[/] {s.recommendation.explanation}")
    else:
        print_summary(s, console)
    plots = write_plots(s, run_dir / "report")
    _print_signature(s, console)
    times["audit"] = time.time() - t0 - sum(times.values())
    console.rule("4/4  what the checkpoint to ship leaks")
    _leakage(s, console)
    from finemem.report.html import write_report

    report = write_report([run_dir])
    took = ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
    console.print(f"plots: {plots}    run folder: {run_dir}    "
                  f"time: {time.time() - t0:.0f} s ({took})")
    console.print(f"[bold]report:[/] {report}  (open it in a browser)")


def _print_signature(s, console) -> None:
    sig = signature(s)
    rec = s.row(s.recommendation.name)
    what = (f"test PPL >= {SIGNATURE_RATIO:g}x its minimum with accuracy within "
            f"{SIGNATURE_DELTA * 100:g} points of the best")
    if len(sig) >= 2:
        names = ", ".join(r.name for r in sig)
        console.print(f"[bold]Over-memorization signature:[/] {len(sig)} consecutive checkpoints "
                      f"({names}) have {what}.")
        for label, key, settings in signature_measures(s.k_samples):
            over = sum(r.get(key, **settings) for r in sig) / len(sig)
            console.print(f"  {label}: {over:.3f} there vs {rec.get(key, **settings):.3f} at "
                          f"the recommended {rec.name}")
    else:
        console.print("[bold red]The over-memorization signature did not appear in this run[/] "
                      f"(no two consecutive checkpoints with PPL >= {SIGNATURE_RATIO:g}x its "
                      f"minimum while accuracy stays within {SIGNATURE_DELTA * 100:g} points of "
                      "the best).")


def leakage_audit_config(run_dir: Path):
    """The run's audit settings with the leakage line's membership settings: the loss attack,
    TPR at 1% FPR (200 non-members resolve 1%, not 0.1%)."""
    from finemem.config import load_config

    return load_config(run_dir / "config.yaml", overrides={
        "audit.membership.attacks": list(LEAKAGE_ATTACKS),
        "audit.membership.fprs": [0.01]}).audit


def _leakage(s, console) -> None:
    """The leakage line of the checkpoint to ship (the loss attack's AUC and TPR at 1% FPR,
    greedy extraction of whole completions) and the most accurate checkpoint within the
    default budget, from the membership results the audit stored."""
    from finemem.analysis.leakage import DEFAULT_BUDGET, leakage_rows, parse_budget, pick_within
    from finemem.report.leakage import ship_leakage_lines

    attack = LEAKAGE_ATTACKS[0]
    rows = leakage_rows(s, attack=attack)
    pick = pick_within(rows, parse_budget(DEFAULT_BUDGET), graded=s.graded)
    for line in ship_leakage_lines(rows, s.recommendation.name, pick, attack=attack):
        console.print(line, highlight=False)
