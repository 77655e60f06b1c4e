"""Confidence intervals for the numbers finemem reports.

Usage:
    from finemem.metrics.stats import Rate, wilson_interval, bootstrap_ci
    Rate.from_counts(228, 250).format()        # '0.912 [0.87, 0.94] n=250'
    Rate.from_values(per_example_scores).format()

A *rate* (share of examples with a 0/1 outcome: accuracy, extraction rate) gets a Wilson score
interval; any other per-example statistic gets a percentile bootstrap over examples.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from statistics import NormalDist
from typing import Callable

import numpy as np


# Below this many examples finemem prints no point estimate as a claim. Reason: at n = 30 the
# 95% Wilson interval around p = 0.5 is [0.33, 0.67], i.e. +-0.17; below that, any difference
# between two checkpoints that a fine-tuning study cares about (a few points) is invisible.
MIN_N_FOR_CLAIM = 30


def _z(conf: float) -> float:
    if not 0.0 < conf < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {conf}")
    return NormalDist().inv_cdf(0.5 + conf / 2.0)


def wilson_interval(k: int, n: int, *, conf: float = 0.95) -> tuple[float, float]:
    r"""Wilson score interval for a binomial proportion.

    .. math::
        \frac{\hat p + \frac{z^2}{2n} \pm z\sqrt{\frac{\hat p(1-\hat p)}{n} + \frac{z^2}{4n^2}}}
             {1 + \frac{z^2}{n}}, \qquad \hat p = k/n

    Parameters
    ----------
    k : int
        Number of successes, ``0 <= k <= n``.
    n : int
        Number of trials. ``n == 0`` gives ``(0.0, 1.0)``: nothing is known.
    conf : float, keyword-only
        Two-sided confidence level.

    References
    ----------
    Wilson (1927); Newcombe (1998), Stat. Med. 17:857, method 3.

    Examples
    --------
    >>> [round(x, 4) for x in wilson_interval(81, 263)]
    [0.2553, 0.3662]
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    z = _z(conf)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Clip rounding noise at the ends (k = 0 gives lo = 0 exactly in exact arithmetic).
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_ci(values, stat: Callable[[np.ndarray], float] = np.mean, *, n_boot: int = 1000,
                 conf: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over examples.

    Parameters
    ----------
    values : array-like, shape (n,)
        One number per example. NaNs are not removed: drop them first.
    stat : callable
        Maps a 1-D array to a float (default mean).
    n_boot : int, keyword-only
        Resamples (with replacement, size n).
    conf : float, keyword-only
        Two-sided level; the interval is the (1-conf)/2 and (1+conf)/2 quantiles.
    seed : int, keyword-only
        Seed of the resampling generator (results are reproducible).

    Returns
    -------
    (lo, hi) : tuple of float; ``(nan, nan)`` with a warning when ``values`` is empty.
    """
    x = np.asarray(values, dtype=float).ravel()
    _z(conf)  # validates conf
    if x.size == 0:
        warnings.warn("bootstrap_ci: no values; returning (nan, nan)", RuntimeWarning,
                      stacklevel=2)
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))  # (n_boot, n)
    stats = np.array([float(stat(x[row])) for row in idx])
    lo, hi = np.quantile(stats, [(1 - conf) / 2, (1 + conf) / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Rate:
    """A point estimate with its interval and sample size.

    ``too_small`` is True when ``n < min_n`` (default `MIN_N_FOR_CLAIM` = 30): reports then print
    "n=12: too few for a claim" instead of a number.
    """

    value: float
    n: int
    lo: float
    hi: float
    min_n: int = MIN_N_FOR_CLAIM

    @property
    def too_small(self) -> bool:
        return self.n < self.min_n

    @classmethod
    def from_counts(cls, k: int, n: int, *, conf: float = 0.95,
                    min_n: int = MIN_N_FOR_CLAIM) -> "Rate":
        """k successes out of n, with the Wilson interval."""
        lo, hi = wilson_interval(k, n, conf=conf)
        return cls(value=k / n if n else math.nan, n=n, lo=lo, hi=hi, min_n=min_n)

    @classmethod
    def from_values(cls, values, stat: Callable[[np.ndarray], float] = np.mean, *,
                    conf: float = 0.95, n_boot: int = 1000, seed: int = 0,
                    min_n: int = MIN_N_FOR_CLAIM) -> "Rate":
        """A per-example statistic with its bootstrap interval."""
        x = np.asarray(values, dtype=float).ravel()
        lo, hi = bootstrap_ci(x, stat, n_boot=n_boot, conf=conf, seed=seed)
        value = float(stat(x)) if x.size else math.nan
        return cls(value=value, n=int(x.size), lo=lo, hi=hi, min_n=min_n)

    def format(self, digits: int = 3) -> str:
        """'0.912 [0.87, 0.94] n=250', or 'n=12: too few for a claim'."""
        if self.too_small:
            return f"n={self.n}: too few for a claim"
        ci = max(digits - 1, 1)
        return f"{self.value:.{digits}f} [{self.lo:.{ci}f}, {self.hi:.{ci}f}] n={self.n}"

    def __str__(self) -> str:
        return self.format()
