import math

import numpy as np
import pytest

from finemem.metrics.stats import MIN_N_FOR_CLAIM, Rate, bootstrap_ci, wilson_interval


@pytest.mark.parametrize("k, n, lo, hi", [
    # Newcombe (1998), Stat. Med. 17:857, Table I, method 3 (Wilson score, 95%).
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
    (29, 29, 0.8830, 1.0),
])
def test_wilson_matches_newcombe_table(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=5e-5)


def test_wilson_by_hand_formula_and_levels():
    # k=5, n=10, z=1.959964: centre 0.5, half = z*sqrt(.025 + z^2/400)/(1 + z^2/10)
    z = 1.959963984540054
    half = z * math.sqrt(0.025 + z * z / 400) / (1 + z * z / 10)
    assert wilson_interval(5, 10) == pytest.approx((0.5 - half, 0.5 + half))
    lo90, hi90 = wilson_interval(5, 10, conf=0.90)
    assert 0.5 - half < lo90 < 0.5 < hi90 < 0.5 + half
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(5, 3)
    with pytest.raises(ValueError, match="confidence level"):
        wilson_interval(1, 3, conf=95)


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    x = np.arange(100, dtype=float)
    lo, hi = bootstrap_ci(x, n_boot=500, seed=1)
    assert (lo, hi) == bootstrap_ci(x, n_boot=500, seed=1)
    # Standard error of the mean ~ 28.9/sqrt(100) = 2.89 -> 95% half-width ~ 5.7.
    assert lo < 49.5 < hi
    assert 3.5 < (hi - lo) / 2 < 8.0
    assert bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)
    lo_med, hi_med = bootstrap_ci(x, np.median, n_boot=200)
    assert lo_med < 49.5 < hi_med


def test_bootstrap_ci_empty_warns():
    with pytest.warns(RuntimeWarning, match="no values"):
        lo, hi = bootstrap_ci([])
    assert math.isnan(lo) and math.isnan(hi)


def test_rate_format_and_too_small():
    r = Rate.from_counts(228, 250)
    assert r.value == pytest.approx(0.912)
    assert not r.too_small
    assert r.format() == "0.912 [0.87, 0.94] n=250"
    small = Rate.from_counts(5, 12)
    assert small.too_small and MIN_N_FOR_CLAIM == 30
    assert small.format() == "n=12: too few for a claim"
    assert not Rate.from_counts(5, 12, min_n=10).too_small


def test_rate_from_values_uses_bootstrap():
    vals = [0.0, 1.0] * 20
    r = Rate.from_values(vals)
    assert r.n == 40 and r.value == pytest.approx(0.5)
    assert (r.lo, r.hi) == bootstrap_ci(vals)
