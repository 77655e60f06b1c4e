"""DC-PDD (Zhang et al. 2024, "Pretraining Data Detection for Large Language Models: A
Divergence-based Calibration Method"): token probabilities calibrated by how common each token
is in a reference corpus, so that a text of frequent tokens does not pass for a member.

The frequency table: token counts over the scored targets of the non-member pool (the
non-members not among those scored, `audit.membership.nonmembers` aside), Laplace-smoothed
over the tokenizer's vocabulary. The paper uses a large pretraining-like corpus; a
fine-tune's own held-out pool is what finemem has without a download.
"""

from __future__ import annotations

import numpy as np

from finemem.audit.attacks import AttackInputs, register_attack


def dcpdd_score(token_lp, token_ids, counts, *, cap: float = 0.01) -> np.ndarray:
    r"""DC-PDD score of each example; member when higher.

    Over the first occurrence of each distinct token of the target (FOS),

    .. math:: \alpha_t = p(x_t)\,\log\frac1{f(x_t)},\quad
              f(v) = \frac{c_v + 1}{\sum_u c_u + V},\quad
              s = \frac1{|\mathrm{FOS}|}\sum_{t\in\mathrm{FOS}} \min(\alpha_t, a)

    with p the model's probability of the target token, c the reference corpus's token
    counts (V of them) and a the cap.

    >>> c = np.array([3.0, 0.0, 1.0])                 # f = [4/7, 1/7, 2/7]
    >>> lp = [np.log([0.5, 0.2, 0.5])]                # tokens 0, 1, 0: the repeat is dropped
    >>> dcpdd_score(lp, [[0, 1, 0]], c, cap=1.0).round(4).tolist()   # (0.5 ln 7/4 + 0.2 ln 7) / 2
    [0.3345]
    """
    counts = np.asarray(counts, dtype=float)
    logf = np.log((counts + 1.0) / (counts.sum() + counts.size))        # (V,)
    out = []
    for lp, ids in zip(token_lp, token_ids):
        lp, ids = np.asarray(lp, float), np.asarray(ids, int)
        if not lp.size:
            out.append(np.nan)
            continue
        _, first = np.unique(ids, return_index=True)                    # first occurrences
        alpha = np.exp(lp[first]) * -logf[ids[first]]
        out.append(float(np.minimum(alpha, cap).mean()))
    return np.array(out)


@register_attack("dcpdd", member_when="higher", needs=("token_ids", "frequency"),
                 paper="Zhang et al., EMNLP 2024")
def dcpdd(inp: AttackInputs):
    """token probability calibrated by the token's frequency in the non-member pool"""
    return dcpdd_score(inp.logprobs, inp.need("token_ids"), inp.need("frequency"),
                       cap=inp.option("dcpdd_cap", 0.01))
