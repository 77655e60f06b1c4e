"""The over-memorization stage rule: one label per checkpoint of a fine-tuning run.

Usage:
    from finemem.analysis.stages import StageRule, label_stages
    res = label_stages(acc, test_ppl, acc_n=[250] * len(acc), rule=StageRule(tau=0.3))
    res.labels          # ['underfit', 'healthy', ..., 'over-memorized']
    res.rows[i].reason  # the numbers behind label i

Paper 1 (Ruan et al. 2025) shows three states over training: low accuracy; high accuracy with
low test perplexity; high accuracy with high test perplexity ("over-memorized"), and contrasts
them with classical overfitting (perplexity up, accuracy down). It gives no decision rule.
finemem's rule, applied to checkpoints in training order (acc_i = test accuracy of the model's
own greedy answers, ppl_i = perplexity of the held-out reference solutions given the question):

    best      = max_j acc_j                                 (over the whole run)
    thr       = underfit_frac * best
    reach     = first i with acc_i >= thr
    m_i       = min_{j <= i} ppl_j                          (running minimum, this one included)
    ppl_high  = ppl_i >= (1 + tau) * m_i
    near_best = acc_i >= best - delta, or, when acc_n is given,
                wilson_upper(acc_i, n_i) >= best - delta

    i < reach                        -> "underfit"        (still learning the task)
    ppl_high and near_best           -> "over-memorized"  (paper 1's third state)
    ppl_high and not near_best       -> "overfit"         (accuracy falling as PPL rises)
    acc_i < thr                      -> "underfit"        (a later collapse without PPL rise)
    otherwise                        -> "healthy"

Default values and why:
- ``tau = 0.3``: the rise that matters is large. In paper 1's curves test PPL grows several
  times over once over-memorization sets in, while between neighbouring checkpoints of a healthy
  phase it moves by a few percent (a few hundred references pool tens of thousands of tokens, so
  sampling noise is small). A 30% rise over the best seen so far is far outside that noise yet
  catches the onset, not only the end state. It is relative, so it works for any PPL scale.
- ``delta = 0.05`` (absolute accuracy): "accuracy stays high" must allow for evaluation noise.
  With n = 250 test problems at 80% accuracy the 95% Wilson half-width is about 0.05, so a
  tighter band would call noise a fall; a looser one would hide classical overfitting.
- ``underfit_frac = 0.5``: below half the run's best accuracy the model has not learned the
  task yet; the exact cut only moves the first one or two checkpoints.
- Noise: when ``acc_n`` is given, "within delta of best" uses the upper Wilson bound at
  ``conf`` (default 0.95), so a checkpoint counts as having fallen only when the evidence says
  so. ``best`` itself is the largest point estimate (slightly optimistic, which this offsets).
- ``min_consecutive = 1``: a run of PPL-high checkpoints shorter than this is treated as noise
  (those checkpoints are labelled as if PPL had not risen). It looks at the whole run, so use it
  after training. Raise it to 2 when checkpoints are frequent and the reference set is small.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from finemem.errors import UserError
from finemem.metrics.stats import wilson_interval

LABELS = ("underfit", "healthy", "over-memorized", "overfit")


@dataclass(frozen=True)
class StageRule:
    """Thresholds of the stage rule (see the module docstring for the reasoning)."""

    underfit_frac: float = 0.5   # underfit below this fraction of the run's best accuracy
    delta: float = 0.05          # "accuracy stays high": within this (absolute) of the best
    tau: float = 0.3             # "PPL rose": ppl >= (1 + tau) * running minimum
    conf: float = 0.95           # Wilson level used when accuracy sample sizes are given
    min_consecutive: int = 1     # shorter runs of risen PPL are treated as noise

    def __post_init__(self):
        checks = [(0.0 <= self.underfit_frac <= 1.0, "underfit_frac must be in [0, 1]"),
                  (0.0 <= self.delta <= 1.0, "delta must be in [0, 1] (absolute accuracy)"),
                  (self.tau > 0.0, "tau must be > 0 (0.3 means a 30% PPL rise)"),
                  (0.0 < self.conf < 1.0, "conf must be in (0, 1)"),
                  (int(self.min_consecutive) == self.min_consecutive and self.min_consecutive
                   >= 1, "min_consecutive must be an integer >= 1")]
        for ok, msg in checks:
            if not ok:
                raise UserError(msg, field="stage_rule")


@dataclass(frozen=True)
class CheckpointStage:
    """The label of one checkpoint and the numbers it was decided from."""

    index: int
    label: str
    acc: float
    acc_upper: float          # upper Wilson bound when n is known, else acc
    n: int | None
    ppl: float
    ppl_min_so_far: float
    ppl_ratio: float          # ppl / ppl_min_so_far
    reason: str


@dataclass(frozen=True)
class StageResult:
    rows: list[CheckpointStage]
    rule: StageRule
    best_acc: float
    underfit_threshold: float
    labels: list[str] = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "labels", [r.label for r in self.rows])

    def indices(self, label: str) -> list[int]:
        if label not in LABELS:
            raise UserError(f"unknown stage '{label}'; stages are {', '.join(LABELS)}")
        return [r.index for r in self.rows if r.label == label]

    def first(self, label: str) -> int | None:
        """Index of the first checkpoint with this label, or None."""
        idx = self.indices(label)
        return idx[0] if idx else None


def _validate(acc, ppl, acc_n):
    a = np.asarray(acc, dtype=float).ravel()
    p = np.asarray(ppl, dtype=float).ravel()
    if a.size == 0:
        raise UserError("no checkpoints to label: pass one accuracy and one PPL per checkpoint")
    if a.shape != p.shape:
        raise UserError(f"{a.size} accuracies but {p.size} PPL values; pass one of each per "
                        "checkpoint, in training order")
    if np.any(~np.isfinite(a)) or np.any((a < 0) | (a > 1)):
        raise UserError("accuracies must be finite fractions in [0, 1] (not percentages)")
    if np.any(~np.isfinite(p)) or np.any(p < 1.0 - 1e-9):
        raise UserError("test PPL must be finite and >= 1 for every checkpoint; evaluate the "
                        "missing checkpoints or drop them")
    n = None
    if acc_n is not None:
        n = np.asarray(acc_n).ravel()
        if n.shape != a.shape or np.any(n < 1) or np.any(n != np.round(n)):
            raise UserError("acc_n must give one positive integer sample size per checkpoint")
        n = n.astype(int)
    return a, p, n


def label_stages(acc, ppl, *, acc_n=None, rule: StageRule | None = None) -> StageResult:
    """Label each checkpoint underfit / healthy / over-memorized / overfit.

    Parameters
    ----------
    acc : array-like, shape (C,)
        Test accuracy per checkpoint, in training order, as fractions.
    ppl : array-like, shape (C,)
        Perplexity of the held-out reference solutions per checkpoint.
    acc_n : array-like of int, shape (C,), keyword-only
        Number of test problems behind each accuracy; enables the Wilson-bound noise rule.
    rule : StageRule, keyword-only
        Thresholds; defaults to ``StageRule()``.

    Returns
    -------
    StageResult
        ``labels`` (one of `LABELS` per checkpoint) and ``rows`` with the reason numbers.
    """
    rule = rule or StageRule()
    a, p, n = _validate(acc, ppl, acc_n)
    best = float(a.max())
    if best == 0.0:
        rows = [CheckpointStage(index=i, label="underfit", acc=0.0, acc_upper=0.0,
                                n=None if n is None else int(n[i]), ppl=float(p[i]),
                                ppl_min_so_far=float(np.min(p[:i + 1])),
                                ppl_ratio=float(p[i] / np.min(p[:i + 1])),
                                reason="accuracy is 0 at every checkpoint: the task was never "
                                       "learned")
                for i in range(a.size)]
        return StageResult(rows=rows, rule=rule, best_acc=0.0, underfit_threshold=0.0)
    thr = rule.underfit_frac * best
    reach = int(np.argmax(a >= thr))           # a.max() >= thr, so some index qualifies
    run_min = np.minimum.accumulate(p)         # (C,)
    ratio = p / run_min
    high = ratio >= 1.0 + rule.tau
    high[:reach] = False                       # the underfit phase takes precedence
    high = _drop_short_runs(high, rule.min_consecutive)
    upper = a.copy()
    if n is not None:
        upper = np.array([wilson_interval(int(round(x * k)), int(k), conf=rule.conf)[1]
                          for x, k in zip(a, n)])
    near = upper >= best - rule.delta - 1e-12

    rows = []
    for i in range(a.size):
        bound = f" (upper {rule.conf:.0%} bound {upper[i]:.3f})" if n is not None else ""
        ppl_txt = f"test PPL {p[i]:.3g} = {ratio[i]:.2f}x the running minimum {run_min[i]:.3g}"
        raw_high = ratio[i] >= 1.0 + rule.tau
        if i < reach:
            label = "underfit"
            reason = (f"accuracy {a[i]:.3f} < {rule.underfit_frac:g} x best {best:.3f} = "
                      f"{thr:.3f}, before accuracy first reached it")
        elif high[i] and near[i]:
            label = "over-memorized"
            reason = (f"{ppl_txt} (>= {1 + rule.tau:.2f}x) while accuracy {a[i]:.3f}{bound} is "
                      f"within {rule.delta:g} of the best {best:.3f}")
        elif high[i]:
            label = "overfit"
            reason = (f"{ppl_txt} (>= {1 + rule.tau:.2f}x) and accuracy {a[i]:.3f}{bound} fell "
                      f"more than {rule.delta:g} below the best {best:.3f}")
        else:
            label = "underfit" if a[i] < thr else "healthy"
            reason = (f"accuracy {a[i]:.3f} ({'<' if a[i] < thr else '>='} {thr:.3f}), "
                      f"{ppl_txt}")
            if raw_high:
                reason += (f"; the PPL rise lasted fewer than {rule.min_consecutive} "
                           "checkpoints and is treated as noise")
            else:
                reason += f" (< {1 + rule.tau:.2f}x)"
        rows.append(CheckpointStage(index=i, label=label, acc=float(a[i]),
                                    acc_upper=float(upper[i]),
                                    n=None if n is None else int(n[i]), ppl=float(p[i]),
                                    ppl_min_so_far=float(run_min[i]), ppl_ratio=float(ratio[i]),
                                    reason=reason))
    return StageResult(rows=rows, rule=rule, best_acc=best, underfit_threshold=thr)


def label_merge(stages: StageResult, steps, step: int, acc: float, ppl: float, *,
                n: int | None = None) -> CheckpointStage:
    """Label a merged checkpoint against its run's trajectory, which it takes no part in: the
    run's best accuracy and the running PPL minimum up to the merge's step (the later of its
    two parents) are the trajectory's; the rule is the same."""
    rule = stages.rule
    prior = [r.ppl for r, s in zip(stages.rows, steps) if s <= step] or [ppl]
    run_min = min(prior)
    ratio = ppl / run_min
    upper = acc if n is None else wilson_interval(int(round(acc * n)), int(n), conf=rule.conf)[1]
    near = upper >= stages.best_acc - rule.delta - 1e-12
    high = ratio >= 1.0 + rule.tau
    if acc < stages.underfit_threshold:
        label = "overfit" if high else "underfit"
    else:
        label = ("over-memorized" if near else "overfit") if high else "healthy"
    reason = (f"merged checkpoint: accuracy {acc:.3f} against the run's best "
              f"{stages.best_acc:.3f}; test PPL {ppl:.3g} = {ratio:.2f}x the trajectory's "
              f"minimum {run_min:.3g} up to step {step}")
    return CheckpointStage(index=-1, label=label, acc=float(acc), acc_upper=float(upper), n=n,
                           ppl=float(ppl), ppl_min_so_far=float(run_min),
                           ppl_ratio=float(ratio), reason=reason)


def longest_stretch(acc, ratios, *, ratio: float = 1.3, delta: float = 0.05) -> list[int]:
    """Indices of the longest run of consecutive checkpoints whose test PPL is at least `ratio`
    times its running minimum (`ratios`, e.g. `CheckpointStage.ppl_ratio`) while the point
    accuracy stays within `delta` of the run's best: the over-memorization signature the demo
    looks for (stricter than the stage rule, which allows for noise). The first such run wins
    a tie; [] when there is none. NaN accuracies never count.

    >>> longest_stretch([0.0, 0.95, 0.96, 0.95, 0.94, 0.80], [1.0, 1.0, 1.1, 1.35, 1.5, 1.9])
    [3, 4]
    """
    a = np.asarray(acc, dtype=float).ravel()
    r = np.asarray(ratios, dtype=float).ravel()
    if a.shape != r.shape:
        raise UserError(f"{a.size} accuracies but {r.size} PPL ratios; pass one of each per "
                        "checkpoint, in training order")
    if a.size == 0 or np.all(np.isnan(a)):
        return []
    best = float(np.nanmax(a))
    run: list[int] = []
    longest: list[int] = []
    for i in range(a.size):
        if r[i] >= ratio and a[i] >= best - delta:
            run.append(i)
            if len(run) > len(longest):
                longest = list(run)
        else:
            run = []
    return longest


def _drop_short_runs(flags: np.ndarray, min_len: int) -> np.ndarray:
    """Clear runs of True shorter than ``min_len``."""
    out = flags.copy()
    if min_len <= 1:
        return out
    i = 0
    while i < out.size:
        if out[i]:
            j = i
            while j < out.size and out[j]:
                j += 1
            if j - i < min_len:
                out[i:j] = False
            i = j
        else:
            i += 1
    return out


__all__ = ["LABELS", "CheckpointStage", "StageResult", "StageRule", "label_merge", "label_stages",
           "longest_stretch"]
