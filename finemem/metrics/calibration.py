"""Calibration of the model's confidence in its own answers.

Usage:
    from finemem.metrics.calibration import expected_calibration_error, brier_score_loss
    ece = expected_calibration_error(conf, correct, n_bins=10)

``confidences[i]`` is the model's probability for its answer to problem i (for example the
product, or the mean, of the answer tokens' probabilities); ``correct[i]`` is 1 when that answer
is right. Paper 1 reports over-memorized checkpoints as worse calibrated (over-confident).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from finemem.metrics.registry import register_metric


def _check(confidences, correct, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    p = np.asarray(confidences, dtype=float).ravel()
    y = np.asarray(correct, dtype=float).ravel()
    if p.shape != y.shape:
        raise ValueError(f"{name}: {p.size} confidences but {y.size} correctness flags")
    if np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError(f"{name}: confidences must be probabilities in [0, 1]")
    if np.any((y != 0) & (y != 1)):
        raise ValueError(f"{name}: correct must hold 0/1 (or bool) values")
    if p.size == 0:
        warnings.warn(f"{name}: no examples; returning nan", RuntimeWarning, stacklevel=3)
        return None
    return p, y


@register_metric("expected_calibration_error", higher_is_better=False, more_memorized_when=None,
                 inputs="confidence_correct")
def expected_calibration_error(confidences, correct, *, n_bins: int = 10) -> float:
    r"""Expected calibration error with equal-width confidence bins (Guo et al. 2017).

    .. math:: \mathrm{ECE} = \sum_{b=1}^{B} \frac{|B_b|}{n}\,
              \big|\mathrm{acc}(B_b) - \mathrm{conf}(B_b)\big|

    Bin b holds confidences in ``[(b-1)/B, b/B)``; the last bin also holds 1.0. Empty bins
    contribute nothing.

    Parameters
    ----------
    confidences : array-like, shape (n,)
    correct : array-like of 0/1, shape (n,)
    n_bins : int, keyword-only

    Examples
    --------
    >>> # bin [0.2,0.3): conf .25, acc 0; bin [0.9,1]: conf .95, acc .5 -> (1*.25 + 2*.45) / 3
    >>> round(expected_calibration_error([0.25, 0.9, 1.0], [0, 1, 0], n_bins=10), 4)
    0.3833
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    checked = _check(confidences, correct, "expected_calibration_error")
    if checked is None:
        return math.nan
    p, y = checked
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)  # (n,) bin index; 1.0 -> last bin
    ece = 0.0
    for b in np.unique(bins):
        m = bins == b
        ece += m.sum() / p.size * abs(y[m].mean() - p[m].mean())
    return float(ece)


@register_metric("brier_score_loss", higher_is_better=False, more_memorized_when=None,
                 inputs="confidence_correct")
def brier_score_loss(confidences, correct) -> float:
    r"""Brier score: mean squared error of the confidence against the 0/1 outcome.

    .. math:: \frac1n\sum_i (p_i - y_i)^2

    Named ``*_loss`` (lower is better) as in scikit-learn's ``brier_score_loss``.

    >>> round(brier_score_loss([0.9, 0.2], [1, 1]), 6)    # (0.01 + 0.64) / 2
    0.325
    """
    checked = _check(confidences, correct, "brier_score_loss")
    if checked is None:
        return math.nan
    p, y = checked
    return float(np.mean((p - y) ** 2))
