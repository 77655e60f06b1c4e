"""`finemem reproduce over-memorization`: the longer experiment behind docs/REPLICATION.md.

Runs (settings beside this module in over_memorization.yaml, on top of the demo's config):
high and low learning rate, full and LoRA, and the MAR loss; merges two checkpoints of one run;
audits everything; then sets the measured numbers, with 95% intervals, next to the paper's
qualitative claims and says which held (`over_memorization_claims`). What each run is for
(the high-LR full run, the low-LR one, LoRA, MAR, the merged run) is its role in the YAML, so
the claims never name runs. Each run is a normal run folder, so a rerun resumes and only
computes what is missing.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

from finemem.errors import UserError
from finemem.experiments import Experiment, get_experiment, register_experiment

# role -> what it is for. Only "high_lr" is required.
ROLES = {
    "high_lr": "full fine-tuning at a high learning rate (the stage rule's subject)",
    "low_lr": "the same at a low learning rate",
    "lora": "LoRA at a high learning rate",
    "mar": "the MAR loss at the high learning rate",
    "merge": "the run whose recommended and final checkpoints are merged",
}


@register_experiment("over-memorization")
class OverMemorization(Experiment):
    description = ("full and LoRA at two learning rates, MAR and a merge, audited; "
                   "writes docs/REPLICATION.md")
    settings_file = "over_memorization.yaml"
    reproducible = True

    def plan(self) -> dict:
        """The YAML settings, checked: runs, roles naming runs, the base experiment."""
        plan = self.settings()
        src = self.settings_source  # the user's file under `--settings`
        runs = plan.get("runs")
        if not isinstance(runs, dict) or not runs:
            raise UserError("no runs", source=src, field="runs")
        roles = plan.get("roles") or {}
        unknown = sorted(set(roles) - set(ROLES))
        if unknown:
            raise UserError(f"unknown role(s) {', '.join(unknown)}; roles: {', '.join(ROLES)}",
                            source=src, field="roles")
        if "high_lr" not in roles:
            raise UserError("the high_lr role is required (the run the claims are about)",
                            source=src, field="roles.high_lr")
        for role, run in roles.items():
            if run not in runs:
                raise UserError(f"names run '{run}', which is not among the runs "
                                f"({', '.join(runs)})", source=src, field=f"roles.{role}")
        return plan

    def configs(self, out: Path) -> dict:
        from finemem.config import set_path

        plan = self.plan()
        # the runs' shared config: `run:` written out (the real-model settings) or the config
        # of the experiment named by `base` (the demo's)
        base = None if "run" in plan else get_experiment(plan.get("base", "demo"))
        cfgs = {}
        for name, overrides in plan["runs"].items():
            raw = copy.deepcopy(plan["run"]) if base is None else base.settings()
            raw["run_dir"] = str(Path(out) / name)
            self.set_model(raw)
            for key, value in {**(plan.get("common") or {}), **(overrides or {})}.items():
                set_path(raw, key, value)
            cfgs[name] = self.parse_run(raw, source=f"{self.settings_source}: runs.{name}")
        return cfgs

    def run(self, out: Path, *, doc: Path = Path("docs/REPLICATION.md"), console=None,
            **_) -> None:
        from rich.console import Console

        from finemem.audit import audit_run, summarize
        from finemem.experiments.over_memorization_claims import write_replication
        from finemem.train import train

        console = console or Console()
        t0 = time.time()
        plan = self.plan()
        cfgs = self.configs(out)
        summaries = {}
        for name, cfg in cfgs.items():
            console.rule(f"{name}: {cfg.training.method} lr={cfg.training.lr:g} "
                         f"loss={cfg.training.loss}")
            train(cfg, progress=self.progress)
            if name == plan["roles"].get("merge"):
                merge_recommended_and_final(Path(cfg.run_dir), progress=self.progress)
            audit_run(cfg.run_dir, progress=self.progress)
            summaries[name] = summarize(cfg.run_dir)
        minutes = (time.time() - t0) / 60
        write_replication(doc, summaries, cfgs, plan["roles"], minutes=minutes,
                          section=self.section(), model=self.model)
        console.print(f"wrote {doc} ({minutes:.1f} min)")


def merge_recommended_and_final(run_dir: Path, *, progress: bool = True) -> Path:
    """Merge the recommended checkpoint with the final one (alpha 1/2, as in the paper's
    two-point average). The recommendation needs the trajectory audited first."""
    from finemem.audit import audit_run, summarize
    from finemem.models.merging import merge_run_checkpoints

    audit_run(run_dir, progress=progress)
    s = summarize(run_dir)
    last = s.rows[-1].name
    done = sorted((run_dir / "merges").glob(f"merge-step-*-{last}-a0.5"))
    if done:  # a rerun: the recommendation may now be the merge itself
        return done[0]
    rec = s.recommendation.name
    if rec == last:
        rec = s.rows[max(len(s.rows) // 3, 1)].name  # nothing to mitigate: merge early + final
    target = run_dir / "merges" / f"merge-{rec}-{last}-a0.5"
    if not target.exists():
        merge_run_checkpoints(run_dir / "checkpoints" / rec, run_dir / "checkpoints" / last,
                              alpha=0.5, out=target)
    return target
