"""Pick the checkpoint to keep, balancing test accuracy against test perplexity (paper 1).

Usage:
    from finemem.analysis.stages import label_stages
    from finemem.analysis.recommend import recommend_checkpoint
    labels = label_stages(acc, ppl, acc_n=n).labels
    rec = recommend_checkpoint(names, steps, acc, ppl, labels, acc_n=n)
    print(rec.name, rec.explanation)

Rule:
1. Candidates are the "healthy" checkpoints. If none is healthy, all checkpoints are candidates
   and the result says it is a fallback.
2. Among candidates, take the best accuracy. Checkpoints whose accuracy is *tied* with it are
   - within ``tie_tol`` (absolute, default 0.01) of it, or
   - when ``acc_n`` is given and ``ci_ties`` is on, not distinguishable from it: their upper
     Wilson bound at ``conf`` reaches the best accuracy's point estimate.
   The CI tie is deliberately generous: when the test set cannot tell two accuracies apart,
   lower test perplexity (less over-memorization, better robustness per paper 1) decides.
3. Among tied checkpoints the lowest test PPL wins; then the earliest step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from finemem.analysis.stages import LABELS
from finemem.errors import UserError
from finemem.metrics.stats import Rate, wilson_interval


@dataclass(frozen=True)
class Recommendation:
    index: int
    name: str
    step: int
    acc: float
    acc_lo: float | None       # Wilson interval when acc_n is given
    acc_hi: float | None
    n: int | None
    ppl: float
    ppl_ratio_to_min: float    # ppl / min over all checkpoints
    label: str
    fallback: bool             # True when no checkpoint was healthy
    tied: list[int]            # candidate indices whose accuracy was treated as a tie
    explanation: str


def recommend_checkpoint(names, steps, acc, ppl, labels, *, acc_n=None, tie_tol: float = 0.01,
                         ci_ties: bool = True, conf: float = 0.95) -> Recommendation:
    """Choose a checkpoint by the rule in the module docstring.

    Parameters
    ----------
    names : sequence of str, length C
        Checkpoint names (folder names), in training order.
    steps : sequence of int, length C
    acc, ppl : array-like, shape (C,)
        Test accuracy (fraction) and test reference perplexity per checkpoint.
    labels : sequence of str, length C
        Stage labels, e.g. ``label_stages(acc, ppl).labels``.
    acc_n : array-like of int, keyword-only
        Test problems behind each accuracy (enables intervals and CI ties).
    tie_tol : float, keyword-only
        Accuracies this close (absolute) to the best are ties.
    ci_ties : bool, keyword-only
        Also treat statistically indistinguishable accuracies as ties (needs ``acc_n``).
    conf : float, keyword-only
        Level of the Wilson intervals.
    """
    names, steps, labels = list(names), [int(s) for s in steps], list(labels)
    a = np.asarray(acc, dtype=float).ravel()
    p = np.asarray(ppl, dtype=float).ravel()
    c = len(names)
    if c == 0:
        raise UserError("no checkpoints to choose from")
    if not (len(steps) == len(labels) == a.size == p.size == c):
        raise UserError(f"names, steps, acc, ppl and labels must have one entry per checkpoint; "
                        f"got {c}, {len(steps)}, {a.size}, {p.size}, {len(labels)}")
    bad = sorted({lab for lab in labels if lab not in LABELS})
    if bad:
        raise UserError(f"unknown stage label(s) {bad}; use {', '.join(LABELS)}")
    if np.any(~np.isfinite(p)) or np.any(~np.isfinite(a)):
        raise UserError("accuracy and PPL must be finite for every checkpoint")
    n = None if acc_n is None else np.asarray(acc_n, dtype=int).ravel()
    if n is not None and n.size != c:
        raise UserError(f"acc_n has {n.size} entries for {c} checkpoints")
    ci = ([wilson_interval(int(round(x * k)), int(k), conf=conf) for x, k in zip(a, n)]
          if n is not None else None)

    candidates = [i for i in range(c) if labels[i] == "healthy"]
    fallback = not candidates
    if fallback:
        candidates = list(range(c))
    best = max(candidates, key=lambda i: a[i])
    tied = [i for i in candidates
            if a[best] - a[i] <= tie_tol + 1e-12
            or (ci is not None and ci_ties and ci[i][1] >= a[best])]
    chosen = min(tied, key=lambda i: (p[i], steps[i]))

    ratio = float(p[chosen] / p.min())
    rec = dict(index=chosen, name=names[chosen], step=steps[chosen], acc=float(a[chosen]),
               acc_lo=None if ci is None else ci[chosen][0],
               acc_hi=None if ci is None else ci[chosen][1],
               n=None if n is None else int(n[chosen]), ppl=float(p[chosen]),
               ppl_ratio_to_min=ratio, label=labels[chosen], fallback=fallback, tied=tied)
    return Recommendation(**rec, explanation=_explain(rec, names, steps, a, p, labels, best,
                                                      tie_tol, ci is not None and ci_ties))


def recommend_by_ppl(names, steps, ppl, ppl_ratio, *, tau: float,
                     n=None) -> Recommendation:
    """For a test set without graded answers: the checkpoint with the lowest test PPL of the
    reference completions (early stopping on held-out likelihood), earliest step among ties.
    Stages need accuracy, so none is drawn; checkpoints whose PPL rose >= (1 + tau)x its running
    minimum are named, since on free text a rising held-out PPL is the memorization signal
    that remains."""
    names, steps = list(names), [int(s) for s in steps]
    p = np.asarray(ppl, dtype=float).ravel()
    if not names:
        raise UserError("no checkpoints to choose from")
    if np.any(~np.isfinite(p)):
        raise UserError("test PPL must be finite for every checkpoint")
    i = min(range(len(names)), key=lambda j: (p[j], steps[j]))
    risen = [names[j] for j, r in enumerate(ppl_ratio) if r >= 1.0 + tau]
    size = f" over {n[i]} test examples" if n is not None and n[i] else ""
    parts = [f"Recommended checkpoint {names[i]} (step {steps[i]}): the lowest test PPL of the "
             f"reference completions, {p[i]:.3g}{size}.",
             "The test set has no graded answers (no 'answer' field, or the task is free text), "
             "so accuracy and the over-memorization stages are not measured; give the eval set "
             "an answer column and an answer_extractor to get them."]
    if risen:
        shown = ", ".join(risen[:6]) + (f" and {len(risen) - 6} more" if len(risen) > 6 else "")
        parts.append(f"{len(risen)} checkpoint(s) have test PPL >= {1 + tau:.2f}x its running "
                     f"minimum ({shown}): the model fits its training texts at the cost of "
                     "held-out ones.")
    else:
        parts.append(f"No checkpoint's test PPL rose to {1 + tau:.2f}x its running minimum.")
    return Recommendation(index=i, name=names[i], step=steps[i], acc=float("nan"), acc_lo=None,
                          acc_hi=None, n=None if n is None else n[i], ppl=float(p[i]),
                          ppl_ratio_to_min=1.0, label="ungraded", fallback=False, tied=[i],
                          explanation=" ".join(parts))


def _acc_text(acc: float, lo, hi, n) -> str:
    if n is None:
        return f"{acc:.3f}"
    return Rate(value=acc, n=n, lo=lo, hi=hi).format()


def _group_text(label: str, idx: list[int], names, steps, a, p) -> str:
    if not idx:
        return f"No checkpoint was {label}."
    shown = ", ".join(names[i] for i in idx[:6]) + (f" and {len(idx) - 6} more"
                                                    if len(idx) > 6 else "")
    ratios = p[idx] / p.min()
    return (f"{len(idx)} checkpoint(s) were {label}, from step {steps[idx[0]]} ({shown}): "
            f"test PPL {ratios.min():.2f}x to {ratios.max():.2f}x the run's minimum, "
            f"accuracy {a[idx].min():.3f} to {a[idx].max():.3f}.")


def _explain(rec: dict, names, steps, a, p, labels, best: int, tie_tol: float,
             ci_ties: bool) -> str:
    i = rec["index"]
    acc_txt = _acc_text(rec["acc"], rec["acc_lo"], rec["acc_hi"], rec["n"])
    parts = [f"Recommended checkpoint {names[i]} (step {steps[i]}): accuracy {acc_txt}, "
             f"test PPL {p[i]:.3g} ({rec['ppl_ratio_to_min']:.2f}x the run's minimum "
             f"{p.min():.3g})."]
    if rec["fallback"]:
        parts.append("No checkpoint was healthy, so this is a fallback: the best accuracy "
                     f"over all checkpoints, lowest PPL among ties; it is {rec['label']}.")
    else:
        tie_rule = f"within {tie_tol:g}" + (", or not distinguishable at the test set's size"
                                             if ci_ties else "")
        if i == best:
            parts.append("It is the healthy checkpoint with the best accuracy" +
                         (f", and the lowest test PPL among the {len(rec['tied'])} checkpoints "
                          f"tied with it ({tie_rule})." if len(rec["tied"]) > 1 else "."))
        else:
            parts.append(f"Its accuracy ties with the best healthy accuracy {a[best]:.3f} "
                         f"({names[best]}) ({tie_rule}), and it has the lowest test PPL among "
                         f"the {len(rec['tied'])} tied checkpoints.")
    parts.append(_group_text("over-memorized",
                             [k for k, lab in enumerate(labels) if lab == "over-memorized"],
                             names, steps, a, p))
    overfit = [k for k, lab in enumerate(labels) if lab == "overfit"]
    if overfit:
        parts.append(_group_text("overfit", overfit, names, steps, a, p))
    n_under = labels.count("underfit")
    if n_under:
        parts.append(f"{n_under} checkpoint(s) were underfit.")
    return " ".join(parts)
