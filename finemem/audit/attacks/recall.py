"""ReCaLL (Xie et al. 2024, "ReCaLL: Membership Inference via Relative Conditional
Log-Likelihoods"): how much an example's log-likelihood changes when non-member text is put
before it. Members lose more: the model's fit to its training text is disturbed by unrelated
context more than its (already poor) fit to unseen text.

The prefix: `audit.membership.recall_shots` non-members from the pool, none of them among the
non-members scored, joined by blank lines and put before each example's own context (the
oldest prefix tokens dropped when the sequence would pass `data.max_length`).
"""

from __future__ import annotations

import numpy as np

from finemem.audit.attacks import AttackInputs, register_attack


def recall_score(mean_lp, prefixed_mean_lp) -> np.ndarray:
    r"""ReCaLL score: the ratio of the conditional to the unconditional mean log-likelihood;
    member when higher.

    .. math:: s_i = \frac{\mathrm{LL}(x_i \mid P)}{\mathrm{LL}(x_i)},\quad
              \mathrm{LL}(x) = \frac1T\sum_t \log p(x_t \mid x_{<t})

    (both negative: a ratio above 1 is a drop when P is prepended).

    >>> recall_score([-1.0, -2.0], [-1.5, -2.2]).round(3).tolist()
    [1.5, 1.1]
    """
    ll = np.asarray(mean_lp, dtype=float)
    cond = np.asarray(prefixed_mean_lp, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return cond / ll


@register_attack("recall", member_when="higher", needs=("prefixed",),
                 paper="Xie et al., EMNLP 2024")
def recall(inp: AttackInputs):
    """log-likelihood ratio with and without a non-member prefix"""
    ll = np.array([s.logprob.mean() for s in inp.scores])
    cond = np.array([s.logprob.mean() if len(s) else np.nan for s in inp.need("prefixed")])
    return recall_score(ll, cond)
