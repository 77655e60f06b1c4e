"""Membership inference and canary exposure: attack scores per example, and the statistics
of how well a score separates members (trained on) from non-members (never trained on).

Usage:
    from finemem.metrics import membership as mi
    s_mem = mi.loss_attack(member_lps)              # (n,) mean NLL, member when lower
    auc = mi.membership_auc(s_mem, s_non, member_when="lower")
    lo, hi = mi.auc_interval(s_mem, s_non, member_when="lower")
    tpr, (lo, hi), k = mi.tpr_at_fpr(s_mem, s_non, fpr=0.01, member_when="lower")
    bits = mi.exposure(canary_nll, twin_nll)        # Secret Sharer exposure, mean over canaries

Attack scores are per example, from one teacher-forced pass (``token_lp[i][t]`` = log p of
target token t of example i; ``mu``, ``sigma`` the mean and std of log p(z) under the model at
that position). Which side of each score means "member" is registered with its attack
(`finemem.audit.attacks`); the statistics take that side as ``member_when``.
"""

from __future__ import annotations

import math
import warnings
import zlib

import numpy as np

from finemem.metrics.registry import register_metric

_SIGMA_FLOOR = 1e-6  # a one-hot predictive distribution has sigma 0


def _arrays(seqs) -> list[np.ndarray]:
    return [np.asarray(s, dtype=float).ravel() for s in seqs]


def _mean_lp(token_lp) -> np.ndarray:
    return np.array([a.mean() if a.size else math.nan for a in _arrays(token_lp)])


# --- attack scores, one per example ------------------------------------------------------

def loss_attack(token_lp) -> np.ndarray:
    r"""Loss attack (Yeom et al. 2018): the mean NLL of each target; member when lower.

    .. math:: s_i = -\frac1{T_i}\sum_t \log p_{i,t}

    >>> loss_attack([np.log([0.5, 0.5]), np.log([0.25])]).round(4).tolist()
    [0.6931, 1.3863]
    """
    return -_mean_lp(token_lp)


def zlib_attack(token_lp, texts: list[str]) -> np.ndarray:
    r"""zlib ratio (Carlini et al. 2021): mean NLL over the zlib-compressed length of the
    scored text in bytes; member when lower (likely under the model, yet not simple).

    .. math:: s_i = \frac{-\frac1{T_i}\sum_t \log p_{i,t}}{|\mathrm{zlib}(x_i)|}
    """
    if len(texts) != len(token_lp):
        raise ValueError(f"zlib_attack: {len(texts)} texts for {len(token_lp)} examples")
    z = np.array([len(zlib.compress(t.encode("utf-8"))) for t in texts], dtype=float)
    return loss_attack(token_lp) / z


def _lowest_k_mean(a: np.ndarray, k: float) -> float:
    if not a.size:
        return math.nan
    m = max(1, int(k * a.size))
    return float(np.sort(a)[:m].mean())


def min_k_attack(token_lp, *, k: float = 0.2) -> np.ndarray:
    r"""Min-K% (Shi et al. 2024): mean log p of the ``max(1, floor(k T))`` least likely target
    tokens; member when higher.

    .. math:: s_i = \frac1{|K_i|}\sum_{t\in K_i}\log p_{i,t},\quad K_i = \text{the } \max(1,
              \lfloor kT_i\rfloor) \text{ tokens of lowest } \log p_{i,t}

    >>> min_k_attack([np.log([0.5, 0.1, 0.8, 0.9, 0.2])], k=0.4).round(4).tolist()
    [-1.956]
    """
    if not 0 < k <= 1:
        raise ValueError(f"min_k: k must be in (0, 1], got {k}")
    return np.array([_lowest_k_mean(a, k) for a in _arrays(token_lp)])


def min_k_pp_attack(token_lp, mu, sigma, *, k: float = 0.2) -> np.ndarray:
    r"""Min-K%++ (Zhang et al. 2024): Min-K% over the per-token normalised log p; member when
    higher.

    .. math:: z_{i,t} = \frac{\log p_{i,t} - \mu_{i,t}}{\sigma_{i,t}},\quad
              \mu = \mathbb E_{z\sim p}\log p(z),\ \sigma^2 = \mathrm{Var}_{z\sim p}\log p(z)

    then the mean of the ``max(1, floor(k T))`` lowest z (sigma floored at 1e-6).
    """
    if not 0 < k <= 1:
        raise ValueError(f"min_k_pp: k must be in (0, 1], got {k}")
    out = []
    for lp, m, s in zip(_arrays(token_lp), _arrays(mu), _arrays(sigma)):
        out.append(_lowest_k_mean((lp - m) / np.maximum(s, _SIGMA_FLOOR), k))
    return np.array(out)


def reference_attack(token_lp, ref_token_lp) -> np.ndarray:
    r"""Reference-model attack (Carlini et al. 2021; Mireshghallah et al. 2022): mean log p
    under the audited model minus under the reference (here the base model); member when
    higher.

    .. math:: s_i = \frac1{T_i}\sum_t \log p_{i,t} - \frac1{T_i}\sum_t \log p^{\mathrm{ref}}_{i,t}
    """
    return _mean_lp(token_lp) - _mean_lp(ref_token_lp)


def rmia_attack(mean_lp, ref_mean_lp, pop_mean_lp, pop_ref_mean_lp, *, a: float = 0.3,
                gamma: float = 1.0, self_index=None) -> np.ndarray:
    r"""RMIA (Zarifzadeh et al., ICML 2024) with one reference model (offline): the share of
    population samples z that x beats by a likelihood ratio of more than gamma; member when
    higher.

    With :math:`\bar p(x) = \exp(\frac1T\sum_t\log p_t)` (per-token geometric mean probability)
    under the audited model and :math:`\bar p_{\mathrm{ref}}` under the reference (a model
    that never saw x, so the paper's offline correction applies):

    .. math:: \mathrm{LR}(x) = \frac{\bar p(x)}{\tfrac12\big((1+a)\,\bar p_{\mathrm{ref}}(x)
              + (1-a)\big)},\qquad
              s(x) = \frac1{|Z|}\sum_{z\in Z}\mathbb 1\Big[\frac{\mathrm{LR}(x)}{\mathrm{LR}(z)}
              > \gamma\Big]

    Parameters
    ----------
    mean_lp, ref_mean_lp : (n,) mean log p of the queries under the model and the reference.
    pop_mean_lp, pop_ref_mean_lp : (m,) the same for the population Z (non-members).
    a : offline scaling in [0, 1]; a = 1 ranks exactly as `reference_attack`.
    gamma : ratio threshold, > 0.
    self_index : (n,) int, optional: for a query that is itself in Z, its index there (it is
        left out of its own comparison; -1 for none).

    >>> rmia_attack([-0.1, -2.0], [-1.0, -1.0], [-0.5, -1.5, -3.0], [-1.0, -1.0, -1.0],
    ...             a=1.0).tolist()
    [1.0, 0.3333333333333333]
    """
    if not 0 <= a <= 1:
        raise ValueError(f"rmia: a must be in [0, 1], got {a}")
    if gamma <= 0:
        raise ValueError(f"rmia: gamma must be > 0, got {gamma}")

    def log_lr(lp, ref_lp):
        lp, ref_lp = np.asarray(lp, float), np.asarray(ref_lp, float)
        return lp - np.log(0.5 * ((1 + a) * np.exp(ref_lp) + (1 - a)))

    q = log_lr(mean_lp, ref_mean_lp)                              # (n,)
    pop = log_lr(pop_mean_lp, pop_ref_mean_lp)                    # (m,)
    if pop.size == 0:
        raise ValueError("rmia: the population (non-members) is empty")
    srt = np.sort(pop)
    beaten = np.searchsorted(srt, q - math.log(gamma), side="left").astype(float)  # (n,)
    denom = np.full(q.shape, float(pop.size))
    if self_index is not None:
        si = np.asarray(self_index, dtype=int)
        has = si >= 0
        beaten[has] -= (pop[si[has]] < q[has] - math.log(gamma))
        denom[has] -= 1
    return beaten / np.maximum(denom, 1.0)


# --- how well a score separates members from non-members ----------------------------------

def _sets(members, nonmembers, member_when: str, name: str):
    if member_when not in ("higher", "lower"):
        raise ValueError(f"{name}: member_when must be 'higher' or 'lower', got {member_when!r}")
    m = np.asarray(members, dtype=float).ravel()
    n = np.asarray(nonmembers, dtype=float).ravel()
    m, n = m[np.isfinite(m)], n[np.isfinite(n)]
    sign = 1.0 if member_when == "higher" else -1.0
    return sign * m, sign * n


def _degenerate(name: str, m: np.ndarray, n: np.ndarray) -> bool:
    if m.size == 0 or n.size == 0:
        warnings.warn(f"{name}: needs members and non-members (got {m.size} and {n.size}); "
                      "returning nan", RuntimeWarning, stacklevel=3)
        return True
    return False


@register_metric("membership_auc", higher_is_better=False, more_memorized_when="higher",
                 inputs="score_sets")
def membership_auc(members, nonmembers, *, member_when: str = "higher") -> float:
    r"""ROC AUC of an attack score: the probability that a random member scores on the member
    side of a random non-member (ties count half); 0.5 = no separation.

    .. math:: \mathrm{AUC} = \frac1{MN}\sum_{i,j}\Big(\mathbb 1[s_i > s'_j]
              + \tfrac12\mathbb 1[s_i = s'_j]\Big)

    (s flipped in sign when ``member_when="lower"``). Computed by scikit-learn's
    ``roc_auc_score``.

    >>> membership_auc([3, 2], [1, 2])
    0.875
    """
    m, n = _sets(members, nonmembers, member_when, "membership_auc")
    if _degenerate("membership_auc", m, n):
        return math.nan
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(m.size), np.zeros(n.size)]
    return float(roc_auc_score(y, np.r_[m, n]))


def auc_interval(members, nonmembers, *, member_when: str = "higher", n_boot: int = 1000,
                 conf: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of `membership_auc`, resampling members and non-members
    separately (stratified). Vectorised Mann-Whitney AUC over the resamples."""
    from scipy.stats import rankdata

    m, n = _sets(members, nonmembers, member_when, "auc_interval")
    if m.size == 0 or n.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    bm = m[rng.integers(0, m.size, size=(n_boot, m.size))]          # (B, M)
    bn = n[rng.integers(0, n.size, size=(n_boot, n.size))]          # (B, N)
    ranks = rankdata(np.concatenate([bm, bn], axis=1), axis=1)      # (B, M+N), ties averaged
    u = ranks[:, : m.size].sum(1) - m.size * (m.size + 1) / 2
    aucs = u / (m.size * n.size)
    lo, hi = np.quantile(aucs, [(1 - conf) / 2, (1 + conf) / 2])
    return float(lo), float(hi)


def needed_nonmembers(fpr: float) -> int:
    """Non-members needed before a TPR at false-positive rate `fpr` is reported: ceil(1/fpr),
    so that at least one false positive is allowed (fewer: the threshold cannot be placed at
    that rate, and the figure is refused)."""
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    return math.ceil(1.0 / fpr - 1e-9)


def tpr_at_fpr(members, nonmembers, *, fpr: float, member_when: str = "higher",
               conf: float = 0.95) -> tuple[float, tuple[float, float], int]:
    r"""True-positive rate at the ROC point with the largest false-positive rate <= ``fpr``,
    with its Clopper-Pearson interval over the M members.

    .. math:: \mathrm{TPR}@\alpha = \max\{\mathrm{TPR}(t) : \mathrm{FPR}(t)\le\alpha\},\quad
              \mathrm{FPR}(t) = \frac{|\{j: s'_j \ge t\}|}{N},\
              \mathrm{TPR}(t) = \frac{|\{i: s_i \ge t\}|}{M}

    Returns (tpr, (lo, hi), k) with k = members detected. Raises `ValueError` when N <
    `needed_nonmembers(fpr)`.

    >>> tpr_at_fpr([5, 4, 1], [3, 2, 0, -1], fpr=0.25)[0]
    0.6666666666666666
    """
    m, n = _sets(members, nonmembers, member_when, "tpr_at_fpr")
    need = needed_nonmembers(fpr)
    if n.size < need:
        raise ValueError(f"TPR at {fpr:g} FPR needs at least {need} non-members, got {n.size}")
    if m.size == 0:
        raise ValueError("tpr_at_fpr: no members")
    from scipy.stats import binomtest
    from sklearn.metrics import roc_curve

    y = np.r_[np.ones(m.size), np.zeros(n.size)]
    f, t, _ = roc_curve(y, np.r_[m, n], drop_intermediate=False)
    tpr = float(t[f <= fpr + 1e-12].max())
    k = int(round(tpr * m.size))
    ci = binomtest(k, m.size).proportion_ci(confidence_level=conf, method="exact")
    return k / m.size, (float(ci.low), float(ci.high)), k


def roc_points(members, nonmembers, *, member_when: str = "higher"):
    r"""The ROC curve of an attack score: every threshold's false- and true-positive rates,
    by scikit-learn's ``roc_curve`` (all thresholds kept).

    .. math:: \mathrm{FPR}(t) = \frac{|\{j: s'_j \ge t\}|}{N},\quad
              \mathrm{TPR}(t) = \frac{|\{i: s_i \ge t\}|}{M}

    (s flipped in sign when ``member_when="lower"``). Returns (fpr, tpr) arrays from (0, 0)
    to (1, 1). Raises `ValueError` without members or non-members.

    >>> f, t = roc_points([3, 2], [1, 2])
    >>> [float(x) for x in f], [float(x) for x in t]
    ([0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0])
    """
    m, n = _sets(members, nonmembers, member_when, "roc_points")
    if m.size == 0 or n.size == 0:
        raise ValueError(f"roc_points: needs members and non-members (got {m.size} and "
                         f"{n.size})")
    from sklearn.metrics import roc_curve

    y = np.r_[np.ones(m.size), np.zeros(n.size)]
    f, t, _ = roc_curve(y, np.r_[m, n], drop_intermediate=False)
    return f, t


@register_metric("membership_tpr_at_fpr", higher_is_better=False, more_memorized_when="higher",
                 kind="rate", inputs="score_sets")
def membership_tpr_at_fpr(members, nonmembers, *, fpr: float | None = None,
                          member_when: str = "higher") -> float:
    """Share of members an attack flags at a threshold whose false-positive rate on the
    non-members is <= fpr (see `tpr_at_fpr`); fpr None = 1/N, the lowest rate N non-members
    resolve. nan with a warning when the non-members are too few for the rate asked.

    >>> membership_tpr_at_fpr([5, 4, 1], [3, 2, 0, -1])      # fpr 1/4
    0.6666666666666666
    """
    m, n = _sets(members, nonmembers, member_when, "membership_tpr_at_fpr")
    if _degenerate("membership_tpr_at_fpr", m, n):
        return math.nan
    fpr = 1.0 / n.size if fpr is None else fpr
    if fpr >= 1:
        return 1.0
    try:
        return tpr_at_fpr(m, n, fpr=fpr)[0]
    except ValueError as e:
        warnings.warn(f"membership_tpr_at_fpr: {e}; returning nan", RuntimeWarning, stacklevel=2)
        return math.nan


# --- canaries: exposure (Carlini et al. 2019, "The Secret Sharer") ------------------------

def exposure_rank(canary_nll, twin_nll) -> np.ndarray:
    r"""Exposure of each canary estimated from its rank among T never-inserted twins drawn the
    same way (bits; 0 to log2(T+1)).

    .. math:: \mathrm{exposure}_c = \log_2(T+1) - \log_2 r_c,\quad
              r_c = 1 + |\{j : \mathrm{nll}^{\mathrm{twin}}_j < \mathrm{nll}_c\}|

    >>> exposure_rank([0.5, 2.5], [1.0, 2.0, 3.0]).round(4).tolist()
    [2.0, 0.415]
    """
    c = np.asarray(canary_nll, dtype=float).ravel()
    t = np.sort(np.asarray(twin_nll, dtype=float).ravel())
    rank = 1 + np.searchsorted(t, c, side="left")
    return math.log2(t.size + 1) - np.log2(rank)


def exposure_skewnorm(canary_nll, twin_nll) -> np.ndarray:
    r"""Exposure extrapolated past the twins: fit a skew-normal to the twins' NLLs (the
    Secret Sharer's approximation of the candidates' distribution) and take

    .. math:: \mathrm{exposure}_c = -\log_2 \hat F(\mathrm{nll}_c)

    with :math:`\hat F` the fitted CDF (scipy.stats.skewnorm, log-CDF for the far tail)."""
    from scipy.stats import skewnorm

    from scipy.stats import norm

    t = np.sort(np.asarray(twin_nll, dtype=float).ravel())  # sorted: the fit is order-free
    c = np.asarray(canary_nll, dtype=float).ravel()
    params = skewnorm.fit(t)
    with np.errstate(divide="ignore"):
        lc = skewnorm.logcdf(c, *params)
    # a strongly skewed fit can underflow to log 0 far out: fall back to the normal's tail
    far = ~np.isfinite(lc)
    if far.any():
        lc[far] = norm.logcdf(c[far], t.mean(), max(t.std(), 1e-12))
    return -lc / math.log(2)


def exposure_per_canary(canary_nll, twin_nll) -> np.ndarray:
    """Rank exposure, replaced by the skew-normal extrapolation where the rank saturates (the
    canary is more likely than every twin), never below the rank bound log2(T+1)."""
    c = np.asarray(canary_nll, dtype=float).ravel()
    t = np.asarray(twin_nll, dtype=float).ravel()
    e = exposure_rank(c, t)
    top = e >= math.log2(t.size + 1) - 1e-12
    if top.any() and t.size >= 3 and np.ptp(t) > 0:
        e[top] = np.maximum(exposure_skewnorm(c[top], t), e[top])
    return e


@register_metric("exposure", higher_is_better=False, more_memorized_when="higher",
                 inputs="score_sets")
def exposure(canary_nll, twin_nll) -> float:
    """Mean exposure (bits) of the canaries (first argument: their NLLs) against their twins
    (second: the twins' NLLs), `exposure_per_canary` averaged.

    >>> round(exposure([1.5, 2.5], [1.0, 2.0, 3.0]), 4)   # (1 + 0.415) / 2
    0.7075
    """
    c = np.asarray(canary_nll, dtype=float).ravel()
    t = np.asarray(twin_nll, dtype=float).ravel()
    if _degenerate("exposure", c, t):
        return math.nan
    return float(np.mean(exposure_per_canary(c, t)))
