"""Relaxed memorization (paper 3): a generation counts as memorized when its embedding is close
enough to the true suffix's, not only when it is the suffix word for word.

Usage:
    relaxed_memorization_rate(cosines, threshold=0.8)       # share of cosines >= 0.8
    threshold_curve(cosines, [0.5, 0.75, 1.0])              # the rate at each threshold
    relative_reduction(full_flags, lora_flags)              # 1 - mean(lora) / mean(full)

The cosines are the extraction probe's per-example `embedding_cosine` (MiniLM embeddings of
the greedy generation and of the true suffix), so nothing is generated or embedded twice. The
paper does not give its threshold; the curve over thresholds is what is reported beside the
configured one.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np

from finemem.metrics.registry import register_metric

DEFAULT_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(11))  # 0.50, 0.55, ... 1.00
EPS = 1e-6  # float32 embeddings of identical texts give cosines of 0.9999999


def check_threshold(threshold: float) -> float:
    """`threshold` as a float, or ValueError when it lies outside [0, 1]."""
    t = float(threshold)
    if not 0.0 <= t <= 1.0 or math.isnan(t):
        raise ValueError(f"a similarity threshold lies in [0, 1]; got {threshold}")
    return t


def relaxed_flags(cosines, *, threshold: float = 0.8) -> np.ndarray:
    """Per-example 0/1: cos_i >= threshold (up to float32 rounding, so that cos = 1 - 1e-7 of
    a verbatim generation counts at threshold 1)."""
    t = check_threshold(threshold)
    return np.asarray(cosines, dtype=float) >= t - EPS


@register_metric("relaxed_memorization_rate", higher_is_better=False,
                 more_memorized_when="higher", kind="rate", inputs="values")
def relaxed_memorization_rate(cosines, *, threshold: float = 0.8) -> float:
    """Share of generations whose embedding cosine to the true suffix reaches the threshold:
    #{i: cos_i >= threshold} / n (nan for n = 0). Monotone non-increasing in the threshold.

    >>> relaxed_memorization_rate([0.2, 0.8, 0.95, 1.0], threshold=0.9)
    0.5
    """
    flags = relaxed_flags(cosines, threshold=threshold)
    if not flags.size:
        warnings.warn("relaxed_memorization_rate: no generations; returning nan",
                      RuntimeWarning, stacklevel=2)
        return math.nan
    return float(flags.mean())


def threshold_curve(cosines, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> np.ndarray:
    """The relaxed rate at each threshold, shape (len(thresholds),); nan for no cosines."""
    c = np.asarray(cosines, dtype=float)
    if not c.size:
        return np.full(len(thresholds), math.nan)
    return np.array([float(relaxed_flags(c, threshold=t).mean()) for t in thresholds])


def relative_reduction(reference, other) -> float:
    """How much less `other` memorizes than `reference`: 1 - mean(other) / mean(reference)
    (0.42 = "42% lower"; negative = more). nan when the reference memorizes nothing."""
    a, b = np.asarray(reference, dtype=float), np.asarray(other, dtype=float)
    if not a.size or not b.size or a.mean() == 0:
        return math.nan
    return float(1.0 - b.mean() / a.mean())


def paired_reduction_ci(reference, other, *, n_boot: int = 1000, conf: float = 0.95,
                        seed: int = 0) -> tuple[float, float, float]:
    """(reduction, lo, hi): `relative_reduction` with a percentile bootstrap interval that
    resamples examples jointly (the two arrays are the same examples under two models);
    resamples where the reference memorizes nothing are dropped."""
    a, b = np.asarray(reference, dtype=float), np.asarray(other, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    value = relative_reduction(a, b)
    if math.isnan(value):
        return value, math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, a.size, size=(n_boot, a.size))
    ma, mb = a[idx].mean(1), b[idx].mean(1)                     # (n_boot,)
    ok = ma > 0
    boots = 1.0 - mb[ok] / ma[ok]
    lo, hi = np.quantile(boots, [(1 - conf) / 2, (1 + conf) / 2])
    return value, float(lo), float(hi)


def paired_diff_ci(a, b, *, n_boot: int = 1000, conf: float = 0.95, seed: int = 0
                   ) -> tuple[float, float, float]:
    """(mean(b) - mean(a), lo, hi) for the same examples under two models, with a percentile
    bootstrap interval that resamples examples jointly; nans for no examples."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    if not a.size:
        return math.nan, math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, a.size, size=(n_boot, a.size))
    boots = b[idx].mean(1) - a[idx].mean(1)                     # (n_boot,)
    lo, hi = np.quantile(boots, [(1 - conf) / 2, (1 + conf) / 2])
    return float(b.mean() - a.mean()), float(lo), float(hi)


__all__ = ["DEFAULT_THRESHOLDS", "check_threshold", "paired_diff_ci", "paired_reduction_ci",
           "relative_reduction", "relaxed_flags", "relaxed_memorization_rate", "threshold_curve"]
