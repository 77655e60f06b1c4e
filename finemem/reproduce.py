"""`finemem reproduce over-memorization`: the longer experiment behind docs/REPLICATION.md.

Runs (settings in finemem/configs/reproduce_over_memorization.yaml, on top of the demo config):
high and low learning rate, full and LoRA, and the MAR loss; merges two checkpoints of the
high-LR full run; audits everything; then sets the measured numbers, with 95% intervals, next
to the paper's qualitative claims and says which held. Each run is a normal run folder, so a
rerun resumes and only computes what is missing.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import yaml
from rich.console import Console

from finemem.config import parse_config, set_path
from finemem.reproduce_claims import write_replication


def plan() -> dict:
    text = resources.files("finemem.configs").joinpath(
        "reproduce_over_memorization.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def run_configs(out: Path) -> dict:
    base_text = resources.files("finemem.configs").joinpath("demo_arith.yaml").read_text("utf-8")
    cfgs = {}
    for name, overrides in plan()["runs"].items():
        raw = yaml.safe_load(base_text)
        raw["run_dir"] = str(out / name)
        for key, value in {**(plan().get("common") or {}), **(overrides or {})}.items():
            set_path(raw, key, value)
        cfgs[name] = parse_config(raw, source=f"reproduce:{name}")
    return cfgs


def reproduce_over_memorization(out: Path, doc: Path, console: Console | None = None) -> None:
    from finemem.audit import audit_run, summarize
    from finemem.audit.merging import merge_run_checkpoints
    from finemem.train import train

    console = console or Console()
    t0 = time.time()
    cfgs = run_configs(out)
    summaries = {}
    for name, cfg in cfgs.items():
        console.rule(f"{name}: {cfg.training.method} lr={cfg.training.lr:g} "
                     f"loss={cfg.training.loss}")
        train(cfg)
        if name == plan()["merge_run"]:
            _merge(Path(cfg.run_dir), merge_run_checkpoints, summarize, audit_run)
        audit_run(cfg.run_dir)
        summaries[name] = summarize(cfg.run_dir)
    minutes = (time.time() - t0) / 60
    write_replication(doc, summaries, cfgs, plan(), minutes=minutes)
    console.print(f"wrote {doc} ({minutes:.1f} min)")


def _merge(run_dir: Path, merge_fn, summarize, audit_run) -> None:
    """Merge the recommended checkpoint with the final one (alpha 1/2, as in the paper's
    two-point average). The recommendation needs the trajectory audited first."""
    audit_run(run_dir)
    s = summarize(run_dir)
    rec, last = s.recommendation.name, s.rows[-1].name
    if rec == last:
        rec = s.rows[max(len(s.rows) // 3, 1)].name  # nothing to mitigate: merge early + final
    target = run_dir / "merges" / f"merge-{rec}-{last}-a0.5"
    if not target.exists():
        merge_fn(run_dir / "checkpoints" / rec, run_dir / "checkpoints" / last, alpha=0.5,
                 out=target)
