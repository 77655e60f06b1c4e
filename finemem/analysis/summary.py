"""Read an audited run back from its results store: one row per checkpoint, stage labels and
the recommended checkpoint. Consumes stored metrics only; never loads a model.

Usage:
    s = summarize(run_dir)
    s.column("test/answer_accuracy")                 # one value per trajectory checkpoint
    row.get("test/distinct_fraction", k=8, first_line=True)
    s.recommendation.explanation

Metric keys are "split/<registry name>"; settings (k, first_line, ...) are stored beside the
value and matched by keyword. A graded test set (answers to check) gets the over-memorization
stage rule; an ungraded one (free text) gets the test-PPL curve and a lowest-PPL
recommendation, and the summary says why no stages are drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from finemem.analysis.recommend import recommend_by_ppl, recommend_checkpoint
from finemem.analysis.stages import CheckpointStage, StageRule, label_merge, label_stages
from finemem.config import AuditConfig
from finemem.errors import UserError
from finemem.run import BASE, RunFolder  # noqa: F401 (BASE: re-exported)
from finemem.store import Store, parse_setting  # noqa: F401 (parse_setting: re-exported)

ACC = "test/answer_accuracy"
PPL = "test/perplexity"


@dataclass
class Row:
    name: str
    step: int
    epoch: float
    metrics: dict[str, list[dict]] = field(default_factory=dict)  # "split/name" -> store rows
    merged: bool = False

    def find(self, key: str, **setting) -> dict | None:
        """The stored row of `key` whose settings include `setting` (None if absent)."""
        for row in self.metrics.get(key, ()):
            if all(row["settings"].get(k) == v for k, v in setting.items()):
                return row
        return None

    def get(self, key: str, default: float = math.nan, **setting) -> float:
        row = self.find(key, **setting)
        return row["value"] if row else default

    def n(self, key: str, **setting) -> int | None:
        row = self.find(key, **setting)
        return row["n"] if row else None

    def has(self, key: str, **setting) -> bool:
        return self.find(key, **setting) is not None


@dataclass
class RunSummary:
    run_dir: Path
    rows: list[Row]              # the trajectory: base (step 0) and every checkpoint
    labels: list[CheckpointStage]  # one per row (label "ungraded" when there is no accuracy)
    recommendation: object
    rule: StageRule
    audit: AuditConfig
    merges: list[Row] = field(default_factory=list)  # merged checkpoints, beside the trajectory
    merge_labels: list[CheckpointStage] = field(default_factory=list)
    graded: bool = True

    def column(self, key: str, **setting) -> list[float]:
        return [r.get(key, **setting) for r in self.rows]

    def first(self, label: str) -> Row | None:
        """The first trajectory checkpoint with this stage label (e.g. the over-memorization
        onset), or None."""
        return next((r for r, lab in zip(self.rows, self.labels) if lab.label == label), None)

    def with_label(self, label: str) -> list[Row]:
        return [r for r, lab in zip(self.rows, self.labels) if lab.label == label]

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows + self.merges if r.name == name), None)

    @property
    def k_samples(self) -> int:
        return self.audit.section("overmem").k_samples


def rule_from(acfg: AuditConfig) -> StageRule:
    o = acfg.section("overmem")
    return StageRule(underfit_frac=o.underfit_frac, delta=o.delta, tau=o.tau,
                     min_consecutive=o.min_consecutive)


def _rows(store: Store, name: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in store.metrics(checkpoint=name):
        if r.split == "*":
            continue  # done-keys
        out.setdefault(r.key, []).append(r.as_dict())
    return out


def summarize(run_dir: str | Path, *, audit_cfg: AuditConfig | None = None,
              store: Store | None = None) -> RunSummary:
    """The run's stage summary from its stored metrics (`store`: the run's open results
    store, when the caller has one)."""
    run = RunFolder(run_dir)
    run_dir = run.path
    run.require_results()
    acfg = audit_cfg or run.config.audit
    own = store is None
    store = run.open_store() if own else store
    try:
        ckpts = run.checkpoints(store)
        rows = [Row(c.name, c.step, c.epoch, _rows(store, c.name)) for c in ckpts
                if c.kind != "merge"]
        merges = [Row(m.name, m.step, m.epoch, _rows(store, m.name), merged=True)
                  for m in ckpts if m.kind == "merge"]
    finally:
        if own:
            store.close()
    rows = [r for r in rows if r.has(PPL)]
    merges = [m for m in merges if m.has(PPL)]
    if not rows:
        raise UserError("no audited checkpoints; run `finemem audit` first", source=str(run_dir))
    rule = rule_from(acfg)
    graded = all(r.has(ACC) for r in rows)
    if graded:
        return _graded(run_dir, rows, merges, rule, acfg)
    return _ungraded(run_dir, rows, merges, rule, acfg)


def _graded(run_dir, rows, merges, rule, acfg) -> RunSummary:
    acc = [r.get(ACC) for r in rows]
    ppl = [r.get(PPL) for r in rows]
    stages = label_stages(acc, ppl, acc_n=[r.n(ACC) for r in rows], rule=rule)
    merges = [m for m in merges if m.has(ACC)]
    steps = [r.step for r in rows]
    merge_labels = [label_merge(stages, steps, m.step, m.get(ACC), m.get(PPL), n=m.n(ACC))
                    for m in merges]
    everything = rows + merges
    labels = stages.rows + merge_labels
    rec = recommend_checkpoint([r.name for r in everything], [r.step for r in everything],
                               [r.get(ACC) for r in everything], [r.get(PPL) for r in everything],
                               [lab.label for lab in labels],
                               acc_n=[r.n(ACC) for r in everything])
    return RunSummary(run_dir, rows, stages.rows, rec, rule, acfg, merges, merge_labels,
                      graded=True)


def _ungraded(run_dir, rows, merges, rule, acfg) -> RunSummary:
    everything = rows + merges
    ppl = [r.get(PPL) for r in everything]
    running = []
    for i, r in enumerate(rows):
        m = min(x.get(PPL) for x in rows[: i + 1])
        running.append(m)
    labels = []
    for i, r in enumerate(everything):
        m = running[i] if i < len(rows) else min(
            [x.get(PPL) for x in rows if x.step <= r.step] or [r.get(PPL)])
        ratio = r.get(PPL) / m
        labels.append(CheckpointStage(index=i, label="ungraded", acc=math.nan, acc_upper=math.nan,
                                      n=None, ppl=r.get(PPL), ppl_min_so_far=m, ppl_ratio=ratio,
                                      reason="no graded answers: stages need test accuracy"))
    rec = recommend_by_ppl([r.name for r in everything], [r.step for r in everything], ppl,
                           [lab.ppl_ratio for lab in labels], tau=rule.tau,
                           n=[r.n(PPL) for r in everything])
    return RunSummary(run_dir, rows, labels[: len(rows)], rec, rule, acfg, merges,
                      labels[len(rows):], graded=False)
