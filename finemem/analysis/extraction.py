"""Extraction results read back from a run's store (no model): one row per checkpoint, and
the curve-level numbers tasks are compared by (onset epoch, area under the curve).

Usage:
    rows = extraction_rows(run_dir)
    rows[-1].get("members", "memorization_ratio", category="verbatim")     # a dict or None
    onset_epoch(rows, "verbatim")    # first epoch whose excess interval lies above 0
    curve_area(rows, "members", "memorization_ratio", category="verbatim")
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finemem.run import BASE, RunFolder
from finemem.store import setting_key



@dataclass
class CheckpointRow:
    name: str
    step: int
    epoch: float
    metrics: dict = field(default_factory=dict)  # (split, name, setting json) -> dict

    def get(self, split: str, name: str, **settings) -> dict | None:
        """The stored {value, n, lo, hi} of one metric with these settings, or None."""
        key = setting_key(**settings)
        return self.metrics.get((split, name, key))


def extraction_rows(run_dir: str | Path, *, store=None) -> list[CheckpointRow]:
    """Checkpoints of the run (training order) that have extraction results (`store`: the
    run's open results store, when the caller has one)."""
    from contextlib import nullcontext

    with RunFolder(run_dir).open_store() if store is None else nullcontext(store) as store:
        ckpts = {c["name"]: c for c in store.checkpoints()}
        rows: dict[str, CheckpointRow] = {}
        for m in store.metrics():
            if m["split"] not in ("members", "nonmembers", "excess", "control_perfect",
                                  "control_null"):
                continue
            c = ckpts.get(m["checkpoint"])
            if c is None and m["checkpoint"] == BASE:
                c = {"step": 0, "epoch": 0.0}  # the base model is not a saved checkpoint
            if c is None:
                continue  # a merge: not on the training curve
            r = rows.setdefault(m["checkpoint"], CheckpointRow(m["checkpoint"], int(c["step"]),
                                                               float(c["epoch"])))
            r.metrics[(m["split"], m["name"], m["setting"])] = m
    return sorted(rows.values(), key=lambda r: r.step)


def excess(row: CheckpointRow, outcome: str, length_bin: str | None = None) -> dict | None:
    extra = {"length_bin": length_bin} if length_bin else {}
    return row.get("excess", "excess_over_nonmembers", outcome=outcome, **extra)


def onset_epoch(rows: list[CheckpointRow], outcome: str = "verbatim",
                length_bin: str | None = None) -> float | None:
    """First epoch whose members-minus-non-members excess (of `outcome`: a category or
    exact_greedy_extractable) has its 95% interval above 0; None if none does."""
    for r in rows:
        e = excess(r, outcome, length_bin)
        if e is not None and e["lo"] is not None and e["lo"] > 0:
            return r.epoch
    return None


def curve_area(rows: list[CheckpointRow], split: str, name: str, **settings) -> float:
    """Mean of a metric over training: the trapezoid area under metric(epoch) divided by the
    epochs covered (so runs of different lengths compare); nan with fewer than 2 points."""
    pts = [(r.epoch, r.get(split, name, **settings)) for r in rows]
    pts = [(e, m["value"]) for e, m in pts if m is not None and not math.isnan(m["value"])]
    if len(pts) < 2:
        return math.nan
    x, y = np.array(pts).T
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 names it trapz
    return float(trapezoid(y, x) / (x[-1] - x[0])) if x[-1] > x[0] else math.nan


def length_bins(rows: list[CheckpointRow]) -> list[str]:
    """The length bins with results, in the order of their lower edge."""
    bins = {json.loads(s).get("length_bin") for r in rows for (_, _, s) in r.metrics if s}
    bins.discard(None)

    def lower(b: str) -> int:
        return int(b.lstrip("<>=").split("-")[0]) - (1 if b.startswith("<") else 0)
    return sorted(bins, key=lower)


def example_outcomes(run_dir: str | Path, checkpoint: str, outcome: str = "verbatim"
                     ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-example 0/1 outcomes of one checkpoint, read from the store: {"members": (flags,
    lengths), "nonmembers": (...)}. `outcome` is a category ('verbatim', 'idea',
    'paraphrase', 'any') or 'exact_greedy_extractable'."""
    run = RunFolder(run_dir)
    out = {}
    with run.open_store() as store:
        chash = run.hashes(store)[checkpoint]
        for split in ("members", "nonmembers"):
            key = "exact_greedy_extractable" if outcome == "exact_greedy_extractable" else "category"
            vals = store.get_values(chash, split, key)
            lens = store.get_values(chash, split, "length")
            ids = sorted(set(vals) & set(lens))
            v = [vals[i] for i in ids]
            if key == "category":
                flags = [(x != "none") if outcome == "any" else (x == outcome) for x in v]
            else:
                flags = [bool(x) for x in v]
            out[split] = (np.array(flags, dtype=float),
                          np.array([lens[i] for i in ids], dtype=int))
    return out


def group_contrast(groups: dict[str, list[dict]], *, n_boot: int = 1000, seed: int = 0,
                   conf: float = 0.95) -> tuple[float, float, float]:
    """(difference, lo, hi) of the mean excess over non-members of group "high" minus group
    "low". Each group is a list of tasks, each task {"members": flags, "nonmembers": flags};
    a task's excess is mean(members) - mean(non-members), a group's the mean over its tasks
    (each task weighs the same). The interval resamples members and non-members within each
    task (percentile bootstrap)."""
    rng = np.random.default_rng(seed)

    def excess(task, draw):
        m, n = task["members"], task["nonmembers"]
        if draw:
            m, n = m[rng.integers(0, m.size, m.size)], n[rng.integers(0, n.size, n.size)]
        return m.mean() - n.mean()

    def diff(draw):
        return (np.mean([excess(t, draw) for t in groups["high"]])
                - np.mean([excess(t, draw) for t in groups["low"]]))

    boots = np.array([diff(True) for _ in range(n_boot)])
    lo, hi = np.quantile(boots, [(1 - conf) / 2, (1 + conf) / 2])
    return float(diff(False)), float(lo), float(hi)
