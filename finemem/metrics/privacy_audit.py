"""The one-run empirical privacy audit (Steinke, Nasr & Jagielski 2023, "Privacy auditing with
one (1) training run"): a lower bound on the epsilon a training run actually satisfies.

Usage:
    from finemem.metrics.privacy_audit import epsilon_lower_bound
    eps_lo = epsilon_lower_bound(scores_in, scores_out, confidence=0.95, delta=1e-5)

Design: m canaries, each put in the training data independently with probability 1/2. After
training, an auditor scores every canary (higher = more member-like), guesses "in" for the
`k_plus` highest, "out" for the `k_minus` lowest and abstains on the rest: r guesses, v of them
right. If training is (eps, delta)-DP, then (their Theorem 3 with the delta term of their
Proposition 5.3 / appendix algorithm)

    P[V >= v] <= P[Binom(r, q) >= v] + 2 m delta alpha,      q = e^eps / (1 + e^eps),
    alpha = max_{i = 1..v} P[v - i <= Binom(r, q) < v] / i,

so at confidence c the run is NOT (eps, delta)-DP for any eps whose right-hand side is below
1 - c. The bound is the largest such eps (0 when there is none). It holds whatever the scores
are (any attack is a valid guesser); a weak attack only makes it lower. It is limited by r: with
every guess right, eps_lo = log(q / (1 - q)) with q = (1 - c)^(1 / r) (delta = 0), e.g. 3.49
for r = 100 at 95%. It says "the run leaks at least this much", never "at most".
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from finemem.metrics.registry import register_metric

EPS_MAX = 60.0  # search ceiling; a bound that large needs thousands of perfect guesses


def one_run_p_value(m: int, r: int, v: int, eps: float, delta: float = 0.0) -> float:
    r"""P-value of v or more right guesses out of r (m canaries) if training is (eps, delta)-DP.

    .. math:: p = P[\mathrm{Bin}(r, q) \ge v] + 2 m \delta \max_{1 \le i \le v}
              \frac{P[v - i \le \mathrm{Bin}(r, q) < v]}{i},
              \qquad q = \frac{e^\epsilon}{1 + e^\epsilon}

    >>> round(one_run_p_value(10, 2, 2, 0.0), 4)          # two coin flips both right
    0.25
    >>> round(one_run_p_value(2, 1, 1, 0.0, delta=0.01), 4)   # 0.5 + 2*2*0.01*0.5
    0.52
    """
    from scipy.stats import binom

    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got m={m}, r={r}, v={v}")
    q = 1.0 / (1.0 + math.exp(-eps))
    tail = float(binom.sf(v - 1, r, q))  # P[Bin >= v]
    alpha = 0.0
    if delta > 0 and v > 0:
        below = binom.cdf(v - 1, r, q) - binom.cdf(v - 1 - np.arange(1, v + 1), r, q)
        alpha = float(np.max(below / np.arange(1, v + 1)))
    return min(1.0, tail + 2.0 * m * delta * alpha)


def epsilon_from_guesses(m: int, r: int, v: int, *, confidence: float = 0.95,
                         delta: float = 0.0) -> float:
    """The largest eps with `one_run_p_value(m, r, v, eps, delta)` < 1 - confidence (0 if none).

    >>> round(epsilon_from_guesses(1000, 100, 100), 3)   # all 100 right: log(q/(1-q)), q=.05^.01
    3.493
    >>> epsilon_from_guesses(1000, 100, 50)              # a coin's score: no evidence
    0.0
    """
    beta = 1.0 - confidence
    if one_run_p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    if one_run_p_value(m, r, v, EPS_MAX, delta) < beta:
        return EPS_MAX
    lo, hi = 0.0, EPS_MAX  # p(lo) < beta <= p(hi); p rises with eps
    while hi - lo > 1e-6:
        mid = (lo + hi) / 2
        if one_run_p_value(m, r, v, mid, delta) < beta:
            lo = mid
        else:
            hi = mid
    return lo


def guesses(scores, *, k_plus: int, k_minus: int) -> np.ndarray:
    """+1 (guess in) for the `k_plus` highest scores, -1 (out) for the `k_minus` lowest, 0
    (abstain) elsewhere. A tie across a cut abstains on the tied scores, so the guesses do not
    depend on the order of the canaries.

    >>> guesses([0.9, 0.1, 0.5, 0.7], k_plus=1, k_minus=1).tolist()
    [1, -1, 0, 0]
    """
    s = np.asarray(scores, dtype=float)
    g = np.zeros(len(s), dtype=int)
    if len(s) == 0:
        return g
    if k_plus > 0:
        cut = np.sort(s)[::-1][min(k_plus, len(s)) - 1]
        g[s > cut] = 1
        if np.sum(s >= cut) <= k_plus:
            g[s == cut] = 1
    if k_minus > 0:
        cut = np.sort(s)[min(k_minus, len(s)) - 1]
        low = (s < cut) | ((s == cut) & (np.sum(s <= cut) <= k_minus))
        g[low & (g == 0)] = -1
    return g


@register_metric("epsilon_lower_bound", higher_is_better=False, more_memorized_when="higher",
                 inputs="score_sets")
def epsilon_lower_bound(members, nonmembers, *, k_plus: int | None = None,
                        k_minus: int | None = None, guess_frac: float = 0.1,
                        confidence: float = 0.95, delta: float = 0.0,
                        member_when: str = "higher") -> float:
    r"""One-run audit (Steinke et al. 2023): eps the run provably exceeds, at `confidence`.

    Parameters
    ----------
    members, nonmembers : 1-D float arrays
        Attack scores of the canaries the coin put in training and of those it left out.
    k_plus, k_minus : int, optional
        Guesses "in" for the k_plus highest and "out" for the k_minus lowest scores (default
        ``ceil(guess_frac * m)`` each, m = all canaries). Fix them before looking at results.
    confidence : float
        1 - beta; the bound is the largest eps with p-value < beta (`one_run_p_value`).
    delta : float
        The delta of the (eps, delta) guarantee being tested (0 for pure DP / no DP).
    member_when : {"higher", "lower"}
        Which side of the score means "member" (loss: lower).

    Returns nan (with a warning) when either side is empty.

    >>> round(epsilon_lower_bound([5, 6, 7, 8], [1, 2, 3, 4], k_plus=4, k_minus=4), 3)
    0.789
    >>> ins, outs = list(range(100, 200)), list(range(100))       # 200 canaries, all separated
    >>> round(epsilon_lower_bound(ins, outs, k_plus=50, k_minus=50), 3)   # r = v = 100
    3.493
    """
    a = np.asarray(members, dtype=float)
    b = np.asarray(nonmembers, dtype=float)
    if len(a) == 0 or len(b) == 0:
        warnings.warn("epsilon_lower_bound needs canaries both in and out of training; "
                      "returning nan", RuntimeWarning, stacklevel=2)
        return float("nan")
    s = np.concatenate([a, b]) * (1.0 if member_when == "higher" else -1.0)
    truth = np.concatenate([np.ones(len(a), int), -np.ones(len(b), int)])
    m = len(s)
    kp = math.ceil(guess_frac * m) if k_plus is None else k_plus
    km = math.ceil(guess_frac * m) if k_minus is None else k_minus
    g = guesses(s, k_plus=kp, k_minus=km)
    r = int(np.sum(g != 0))
    v = int(np.sum(g == truth))
    return float(epsilon_from_guesses(m, r, v, confidence=confidence, delta=delta))
