"""Read an audited run back from its results store: one row per checkpoint, stage labels and
the recommended checkpoint. Consumes stored metrics only; never loads a model."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from finemem.analysis.recommend import recommend_checkpoint
from finemem.analysis.stages import StageRule, label_stages
from finemem.config import AuditConfig, load_config
from finemem.errors import UserError
from finemem.store import Store

BASE = "step-000000"


@dataclass
class Row:
    name: str
    step: int
    epoch: float
    metrics: dict[str, dict] = field(default_factory=dict)  # "split/name" -> store row

    def get(self, key: str, default: float = math.nan) -> float:
        row = self.metrics.get(key)
        return row["value"] if row else default

    def n(self, key: str) -> int | None:
        row = self.metrics.get(key)
        return row["n"] if row else None


@dataclass
class RunSummary:
    run_dir: Path
    rows: list[Row]
    labels: list  # CheckpointStage per row: .label, .ppl_ratio, .reason
    recommendation: object
    rule: StageRule
    merges: list[Row] = field(default_factory=list)  # merged checkpoints, beside the trajectory

    def column(self, key: str) -> list[float]:
        return [r.get(key) for r in self.rows]


def rule_from(acfg: AuditConfig) -> StageRule:
    return StageRule(underfit_frac=acfg.underfit_frac, delta=acfg.delta, tau=acfg.tau,
                     min_consecutive=acfg.min_consecutive)


def summarize(run_dir: str | Path, *, audit_cfg: AuditConfig | None = None) -> RunSummary:
    run_dir = Path(run_dir)
    if not (run_dir / "results.sqlite").is_file():
        raise UserError("no results store; run `finemem train` and `finemem audit` first",
                        source=str(run_dir))
    acfg = audit_cfg or load_config(run_dir / "config.yaml").audit
    with Store(run_dir / "results.sqlite") as store:
        ckpts = [{"name": BASE, "step": 0, "epoch": 0.0}] + store.checkpoints()
        rows = []
        for c in ckpts:
            m = {f"{r['split']}/{r['name']}": r for r in store.metrics(checkpoint=c["name"])}
            if "test/accuracy" in m and "test/ppl" in m:
                rows.append(Row(c["name"], c["step"], c["epoch"], m))
        merges = []
        for d in sorted((run_dir / "merges").glob("*/finemem_ckpt.json")):
            m = {f"{r['split']}/{r['name']}": r for r in store.metrics(checkpoint=d.parent.name)}
            if "test/accuracy" in m:
                rec = json.loads(d.read_text())
                merges.append(Row(d.parent.name, rec["step"], rec["epoch"], m))
    if not rows:
        raise UserError("no audited checkpoints; run `finemem audit` first", source=str(run_dir))
    rule = rule_from(acfg)
    acc = [r.get("test/accuracy") for r in rows]
    ppl = [r.get("test/ppl") for r in rows]
    stages = label_stages(acc, ppl, acc_n=[r.n("test/accuracy") for r in rows], rule=rule)
    rec = recommend_checkpoint([r.name for r in rows], [r.step for r in rows], acc, ppl,
                               stages.labels,
                               acc_n=[r.n("test/accuracy") for r in rows])
    return RunSummary(run_dir, rows, stages.rows, rec, rule, merges)
