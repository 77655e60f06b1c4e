"""The online over-memorization stop: one rule for `finemem train` (training.
stop_after_overmemorized) and `FinememCallback` (stop_after_overmemorized=N).

    verdict = audit_checkpoint(run_dir, "step-000120", step=120, stop_after=2)
    verdict.label, verdict.streak, verdict.stop     # judged on the main process, shared

Each saved checkpoint is audited (the same loop and store as `finemem audit`; under a launcher
every process takes its share), the stage rule is applied to the checkpoints so far (the
running best accuracy and the running PPL minimum, which is what the full-run rule gives for
every checkpoint up to the run's best), and training stops after N consecutive over-memorized
checkpoints. The stop is recorded in RUN_DIR/stopped.json (`read_stop`), so a rerun of
`finemem train` does not resume past it. The checkpoint's metrics come back under
tracker-safe names (`tracker_name`) for whatever the trainer logs to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from finemem import distributed as ddp
from finemem.errors import UserError
from finemem.io import write_json_atomic
from finemem.run import RunFolder
from finemem.store import MetricRow

STOPPED = "stopped.json"


def online_streak(labels: list[str]) -> int:
    """Consecutive 'over-memorized' labels at the end of `labels`.

    >>> online_streak(["healthy", "over-memorized", "over-memorized"])
    2
    """
    n = 0
    for lab in reversed(labels):
        if lab != "over-memorized":
            break
        n += 1
    return n


def tracker_name(r: MetricRow) -> str:
    """A tracker-safe name (letters, digits, _ . - /): finemem/<split>/<metric>, then each
    setting as .<key>_<value>, e.g. finemem/test/distinct_fraction.first_line_true.k_8."""
    safe = lambda x: re.sub(r"[^0-9A-Za-z_.-]", "_", str(x)).lower()  # noqa: E731
    st = "".join(f".{safe(k)}_{safe(v)}" for k, v in sorted(r.settings.items()))
    return f"finemem/{safe(r.split)}/{safe(r.name)}{st}"


def read_stop(run_dir: str | Path) -> dict | None:
    """The stop record of a run that the online stop ended, else None."""
    p = Path(run_dir) / STOPPED
    import json

    return json.loads(p.read_text("utf-8")) if p.is_file() else None


@dataclass
class Verdict:
    """The online rule's view of one audited checkpoint."""
    name: str
    label: str           # its stage ("ungraded" without answers, "unknown" without a summary)
    streak: int          # over-memorized checkpoints in a row, ending at this one
    stage_index: int     # index in finemem.analysis.stages.LABELS, -1 when ungraded / unknown
    stop: bool           # the streak reached stop_after
    summary: object | None = None          # the RunSummary so far (None: none can be drawn)
    note: str | None = None                # why there is no summary
    metrics: dict[str, float] = field(default_factory=dict)  # tracker name -> value

    @property
    def ship(self) -> str | None:
        """The checkpoint the rule recommends so far."""
        return self.summary.recommendation.name if self.summary is not None else None


def judge(run_dir: str | Path, name: str, *, step: int, stop_after: int | None) -> Verdict:
    """Apply the stage rule to the checkpoints audited so far, ending at `name`; record the
    stop when the streak reaches `stop_after`."""
    import finemem.audit as audit  # looked up at call time (tests stand a fake summary in)
    from finemem.analysis.stages import LABELS

    run = RunFolder(run_dir)
    with run.open_store() as store:
        rows = store.metrics(checkpoint=name)
    metrics = {tracker_name(r): float(r.value) for r in rows if r.split != "*"}
    try:
        s = audit.summarize(run.path)
    except UserError as e:  # e.g. probes without test PPL: no stages, nothing to ship
        v = Verdict(name, "unknown", 0, -1, False, note=str(e))
    else:
        labels = [lab.label for lab in s.labels]
        label = labels[-1] if labels else "ungraded"
        streak = online_streak(labels) if s.graded else 0
        v = Verdict(name, label, streak, LABELS.index(label) if label in LABELS else -1,
                    bool(stop_after) and streak >= stop_after, summary=s)
    v.metrics = {**metrics, "finemem/overmemorized_streak": float(v.streak),
                 "finemem/stage": float(v.stage_index)}
    if v.stop:
        write_json_atomic(run.path / STOPPED, {
            "step": step, "checkpoint": name, "overmemorized_in_a_row": v.streak,
            "ship": v.ship, "why": v.summary.recommendation.explanation})
    return v


def audit_checkpoint(run_dir: str | Path, name: str | None, *, step: int, stop_after: int | None,
                     probes: list[str] | None = None, device: str = "auto") -> Verdict | None:
    """Audit the run's new checkpoints (every process takes its share under a launcher), then
    judge `name` on the main process. Returns the verdict there, None on the other processes
    (and when `name` is None: a process that only takes its share); `shared_stop` hands them
    the main process's decision."""
    import finemem.audit as audit

    audit.audit_run(run_dir, probes=probes, device=device, progress=False)
    if name is None or not ddp.is_main():
        return None
    return judge(run_dir, name, step=step, stop_after=stop_after)


def shared_stop(verdict: Verdict | None) -> bool:
    """The main process's stop decision, on every process."""
    stop = bool(verdict is not None and verdict.stop)
    if ddp.active():
        from accelerate.utils import broadcast_object_list

        stop = broadcast_object_list([stop], from_process=0)[0]
    return stop
