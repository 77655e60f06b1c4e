"""Likelihood and greedy-match metrics from teacher-forced scores.

Usage:
    from finemem.metrics.likelihood import perplexity, extraction_strength
    ppl = perplexity(token_lp)              # token_lp: list of (T_i,) arrays of log p(y_t | ...)
    es = extraction_strength(flags)         # flags: list of (T_i,) bool arrays, argmax == y_t

Inputs come from one forward pass of the model over (prompt, target): ``token_lp[i][t]`` is
log p(y_t | x, y_<t) of target token t of example i (natural log), and ``flags[i][t]`` says
whether the argmax at that position equals y_t. Examples may have different lengths.

Aggregation rule: token-level metrics (NLL, perplexity, token accuracy) are pooled over all
target tokens, as language-model perplexity is; example-level metrics (extraction) are averaged
over examples. Every aggregate takes ``per_example=True`` to return the (n,) array instead.
Examples with no target tokens are dropped with a warning; no examples left -> nan + warning.
"""

from __future__ import annotations

import math
import warnings
import zlib

import numpy as np

from finemem.metrics.registry import register_metric

# Log-probs above this are not log-probs (float error on log(1) stays far below it).
_LOGPROB_TOL = 1e-4


def _as_arrays(seqs, *, name: str, dtype) -> list[np.ndarray]:
    if isinstance(seqs, np.ndarray) and seqs.ndim == 1 and seqs.dtype != object:
        raise ValueError(f"{name}: expected a list of 1-D arrays (one per example), got one 1-D "
                        "array; wrap it as [array] for a single example")
    out = []
    for i, s in enumerate(seqs):
        a = np.asarray(s, dtype=dtype)
        if a.ndim != 1:
            raise ValueError(f"{name}: example {i} has shape {a.shape}; each example must be a "
                            "1-D array over target tokens")
        out.append(a)
    kept = [a for a in out if a.size > 0]
    if len(kept) < len(out):
        warnings.warn(f"{name}: dropped {len(out) - len(kept)} example(s) with no target tokens",
                      RuntimeWarning, stacklevel=3)
    return kept


def _logprobs(token_lp, name: str) -> list[np.ndarray]:
    arrs = _as_arrays(token_lp, name=name, dtype=float)
    for i, a in enumerate(arrs):
        if np.any(a > _LOGPROB_TOL):
            raise ValueError(f"{name}: example {i} has positive values (max {a.max():.3g}); pass "
                            "natural-log probabilities (<= 0), not probabilities or NLLs")
    return arrs


def _flags(flags, name: str) -> list[np.ndarray]:
    return _as_arrays(flags, name=name, dtype=bool)


def _empty(name: str, per_example: bool):
    warnings.warn(f"{name}: no examples with target tokens; returning nan", RuntimeWarning,
                  stacklevel=3)
    return np.array([], dtype=float) if per_example else math.nan


def _mean_nll(token_lp, name: str, per_example: bool):
    arrs = _logprobs(token_lp, name)
    if not arrs:
        return _empty(name, per_example)
    if per_example:
        return np.array([-a.mean() for a in arrs])
    return float(-sum(a.sum() for a in arrs) / sum(a.size for a in arrs))


@register_metric("sum_nll", higher_is_better=False, more_memorized_when="lower",
                 inputs="token_logprobs")
def sum_nll(token_lp, *, per_example: bool = False):
    r"""Summed negative log-likelihood of each target, averaged over examples.

    .. math:: \mathrm{NLL}_i = -\sum_t \log p(y_{i,t}\mid x_i, y_{i,<t}),\qquad
              \text{aggregate} = \frac1n\sum_i \mathrm{NLL}_i

    Parameters
    ----------
    token_lp : list of ndarray, each shape (T_i,)
        Natural-log probabilities of the target tokens.
    per_example : bool, keyword-only
        Return the (n,) array of NLL_i instead of their mean.

    Examples
    --------
    >>> round(sum_nll([np.log([0.5, 0.5]), np.log([0.25])]), 4)   # (1.3863 + 1.3863) / 2
    1.3863
    """
    arrs = _logprobs(token_lp, "sum_nll")
    if not arrs:
        return _empty("sum_nll", per_example)
    per = np.array([-a.sum() for a in arrs])
    return per if per_example else float(per.mean())


@register_metric("mean_nll", higher_is_better=False, more_memorized_when="lower",
                 inputs="token_logprobs")
def mean_nll(token_lp, *, per_example: bool = False):
    r"""Per-token negative log-likelihood, pooled over all target tokens.

    .. math:: \frac{\sum_i \mathrm{NLL}_i}{\sum_i T_i}
        \quad(\text{per example: } \mathrm{NLL}_i / T_i)

    Examples
    --------
    >>> round(mean_nll([np.log([0.5, 0.5]), np.log([0.25])]), 4)   # 2*ln 4 / 3 tokens
    0.9242
    """
    return _mean_nll(token_lp, "mean_nll", per_example)


@register_metric("perplexity", higher_is_better=False, more_memorized_when="lower",
                 inputs="token_logprobs")
def perplexity(token_lp, *, per_example: bool = False):
    r"""Per-token perplexity, pooled over tokens: ``exp(mean_nll)``.

    .. math:: \mathrm{PPL} = \exp\Big(\frac{-\sum_i\sum_t \log p_{i,t}}{\sum_i T_i}\Big)

    Pooling weights long targets by their length (the usual LM convention); the mean of
    per-example perplexities would instead be dominated by a few badly predicted short targets.
    On held-out reference solutions this is the "test PPL" of the over-memorization paper.

    Examples
    --------
    >>> round(perplexity([np.log([0.5, 0.5]), np.log([0.25])]), 4)   # 4 ** (2/3)
    2.5198
    """
    if per_example:
        return np.exp(_mean_nll(token_lp, "perplexity", True))
    arrs = _logprobs(token_lp, "perplexity")
    if not arrs:
        return _empty("perplexity", False)
    return pooled_perplexity([-float(a.sum()) for a in arrs], [a.size for a in arrs])


def pooled_perplexity(nll_sums, n_tokens) -> float:
    r"""Perplexity pooled from per-example sums: ``exp(sum_i NLL_i / sum_i T_i)``.

    The form `perplexity` reduces to; a bootstrap over examples resamples these sums.

    >>> round(pooled_perplexity([2 * np.log(2), np.log(4)], [2, 1]), 4)
    2.5198
    """
    s = np.asarray(nll_sums, dtype=float)
    t = np.asarray(n_tokens, dtype=float)
    return math.exp(float(s.sum()) / max(float(t.sum()), 1.0))


@register_metric("token_accuracy", higher_is_better=True, more_memorized_when="higher",
                 inputs="correct_flags")
def token_accuracy(correct_flags, *, per_example: bool = False):
    r"""Share of target tokens whose argmax prediction is right, pooled over tokens.

    .. math:: \frac{\sum_i\sum_t \mathbb 1[\arg\max p_{i,t} = y_{i,t}]}{\sum_i T_i}

    Tokens of one example are not independent, so use a bootstrap over examples for its
    interval, not a Wilson interval over tokens.

    >>> token_accuracy([[1, 0], [1, 1, 1, 1]])
    0.8333333333333334
    """
    arrs = _flags(correct_flags, "token_accuracy")
    if not arrs:
        return _empty("token_accuracy", per_example)
    if per_example:
        return np.array([a.mean() for a in arrs])
    return float(sum(a.sum() for a in arrs) / sum(a.size for a in arrs))


@register_metric("exact_greedy_extractable", higher_is_better=True, more_memorized_when="higher",
                 kind="rate", inputs="correct_flags")
def exact_greedy_extractable(correct_flags, *, per_example: bool = False):
    r"""Share of examples whose whole target is reproduced by greedy decoding.

    With teacher forcing, every argmax right means greedy decoding from the prompt emits the
    target verbatim: :math:`\frac1n\sum_i \prod_t \mathbb 1[\arg\max p_{i,t} = y_{i,t}]`.

    >>> exact_greedy_extractable([[1, 1], [1, 0]])
    0.5
    """
    arrs = _flags(correct_flags, "exact_greedy_extractable")
    if not arrs:
        return _empty("exact_greedy_extractable", per_example)
    per = np.array([bool(a.all()) for a in arrs])
    return per if per_example else float(per.mean())


@register_metric("leading_match_length", higher_is_better=True, more_memorized_when="higher",
                 inputs="correct_flags")
def leading_match_length(correct_flags, *, per_example: bool = False):
    r"""Number of target tokens reproduced greedily before the first miss, mean over examples.

    .. math:: L_i = \min\{t : \text{flag}_{i,t} = 0\}\ (\text{or } T_i \text{ if none})

    >>> leading_match_length([[1, 1, 0, 1], [0, 1]])
    1.0
    """
    arrs = _flags(correct_flags, "leading_match_length")
    if not arrs:
        return _empty("leading_match_length", per_example)
    per = np.array([int(np.argmin(a)) if not a.all() else a.size for a in arrs])
    return per if per_example else float(per.mean())


@register_metric("extraction_strength", higher_is_better=True, more_memorized_when="higher",
                 inputs="correct_flags")
def extraction_strength(correct_flags, *, per_example: bool = False):
    r"""Share of the target the model completes greedily from the shortest target prefix.

    .. math:: \mathrm{ES}_i = 1 - \frac{k_i}{T_i},\quad
              k_i = \min\{k : \text{flag}_{i,t} = 1\ \forall t \ge k\}

    Given the prompt and the true prefix y_<k, greedy decoding reproduces y_>=k exactly iff
    every argmax from position k on is right, so k_i is the shortest prefix that extracts the
    rest (Carlini et al. 2021; Yuan et al. 2024). A wrong last token gives 0, all right gives 1.

    >>> [round(extraction_strength([f]), 4) for f in ([0, 1, 1], [1, 1, 0], [1, 1, 1])]
    [0.6667, 0.0, 1.0]
    """
    arrs = _flags(correct_flags, "extraction_strength")
    if not arrs:
        return _empty("extraction_strength", per_example)
    per = []
    for a in arrs:
        wrong = np.flatnonzero(~a)
        k = int(wrong[-1]) + 1 if wrong.size else 0   # first position after the last miss
        per.append(1.0 - k / a.size)
    per = np.array(per)
    return per if per_example else float(per.mean())


def zlib_length(text: str) -> int:
    """Length in bytes of the zlib-compressed UTF-8 text (an entropy reference, Carlini 2021).

    >>> zlib_length("") == len(zlib.compress(b""))
    True
    """
    return len(zlib.compress(text.encode("utf-8")))
