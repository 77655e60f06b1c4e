"""Per-example memorization trajectories across a run's checkpoints, from stored values only.

Usage:
    ckpts, trajs = load_trajectories(run_dir)      # the `membership` / `canaries` probes' rows
    summary = summarize_trajectories(ckpts, trajs)
    write_csv(run_dir / "report" / "trajectories.csv", ckpts, trajs)

For every audited training example (members sampled by the `membership` probe, canaries of
the `canaries` probe): its mean NLL and whether it is greedily extractable (every argmax of
its teacher-forced completion right, the engine's exact flag) at each checkpoint; the first
checkpoint where it is extractable; whether it was *forgotten* (extractable at some checkpoint,
not at the last one); and *never* when it is extractable at none.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from finemem.errors import UserError
from finemem.run import RunFolder

SPLITS = ("membership", "canaries")


@dataclass
class Trajectory:
    id: str
    split: str
    times_per_epoch: int | None
    nll: list[float] = field(default_factory=list)          # one per checkpoint, nan if absent
    exact: list[bool | None] = field(default_factory=list)  # None if absent

    def first(self) -> int | None:
        """Index of the first checkpoint where it is extractable, None if never."""
        return next((i for i, e in enumerate(self.exact) if e), None)

    @property
    def forgotten(self) -> bool:
        last = next((e for e in reversed(self.exact) if e is not None), None)
        return self.first() is not None and last is False


def load_trajectories(run_dir: str | Path) -> tuple[list[dict], list[Trajectory]]:
    """(checkpoints, trajectories): the run's checkpoints in order (base first, those with
    stored per-example values) and one trajectory per audited example."""
    from finemem.data.duplication import read_manifest

    run = RunFolder(run_dir)
    run_dir = run.path
    if not run.has_results():
        raise UserError("no results store; run `finemem train` and `finemem audit RUN_DIR "
                        "--probes membership` first", source=str(run_dir))
    times = {}
    if (run_dir / "manifest.jsonl").is_file():
        times = {str(r["id"]): int(r["times_per_epoch"])
                 for r in read_manifest(run_dir / "manifest.jsonl")}
    ckpts: list[dict] = []
    per: dict[tuple[str, str], Trajectory] = {}
    with run.open_store() as store:
        for ref in run.checkpoints(store, merges=False):
            if ref.content_hash is None:
                continue  # the base, its hash never stored and its folder gone
            got = {(sp, w): store.get_values(ref.content_hash, sp, w)
                   for sp in SPLITS for w in ("mean_nll", "exact_greedy_extractable")}
            if not any(got.values()):
                continue
            k = len(ckpts)
            ckpts.append({"name": ref.name, "step": ref.step, "epoch": ref.epoch})
            for sp in SPLITS:
                nll, ex = got[(sp, "mean_nll")], got[(sp, "exact_greedy_extractable")]
                for i in set(nll) | set(ex):
                    t = per.setdefault((sp, i), Trajectory(i, sp, times.get(i)))
                    t.nll += [math.nan] * (k - len(t.nll))
                    t.exact += [None] * (k - len(t.exact))
                    t.nll.append(float(nll[i]) if i in nll else math.nan)
                    t.exact.append(bool(ex[i]) if i in ex else None)
    if not per:
        raise UserError("no per-example results to trace; run `finemem audit RUN_DIR --probes "
                        "membership` (and `canaries` for a canary run) first",
                        source=str(run_dir))
    for t in per.values():  # pad examples missing at the last checkpoints
        t.nll += [math.nan] * (len(ckpts) - len(t.nll))
        t.exact += [None] * (len(ckpts) - len(t.exact))
    return ckpts, sorted(per.values(), key=lambda t: (t.split, t.id))


def summarize_trajectories(ckpts: list[dict], trajs: list[Trajectory]) -> dict:
    """Counts: memorized (first extractable) at each checkpoint, cumulative, forgotten, never."""
    first = [t.first() for t in trajs]
    by_ckpt = []
    cum = 0
    for k, c in enumerate(ckpts):
        new = sum(f == k for f in first)
        cum += new
        by_ckpt.append({**c, "new": new, "cumulative": cum})
    return {"examples": len(trajs), "by_checkpoint": by_ckpt,
            "memorized": sum(f is not None for f in first),
            "forgotten": sum(t.forgotten for t in trajs),
            "never": sum(f is None for f in first)}


def write_csv(path: str | Path, ckpts: list[dict], trajs: list[Trajectory]) -> Path:
    """One row per example: id, split, times_per_epoch, first extractable checkpoint (name,
    step, epoch), forgotten, extractable at the end, then its NLL at every checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = ["id", "split", "times_per_epoch", "first_extractable", "first_extractable_step",
            "first_extractable_epoch", "forgotten", "extractable_at_end"]
    head += [f"nll@{c['name']}" for c in ckpts]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(head)
        for t in trajs:
            k = t.first()
            end = next((e for e in reversed(t.exact) if e is not None), None)
            w.writerow([t.id, t.split, t.times_per_epoch if t.times_per_epoch else "",
                        ckpts[k]["name"] if k is not None else "",
                        ckpts[k]["step"] if k is not None else "",
                        ckpts[k]["epoch"] if k is not None else "", int(t.forgotten),
                        "" if end is None else int(end)]
                       + ["" if math.isnan(v) else f"{v:.5g}" for v in t.nll])
    return path
