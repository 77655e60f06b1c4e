"""The self-calibrated reference attack (SPV-MIA's self-prompt calibration; Fu et al. 2024,
"Practical Membership Inference Attacks against Fine-tuned Large Language Models via
Self-prompt Calibration"): the reference model is not the base but the base fine-tuned on
text the audited model writes itself, so it knows the fine-tune's domain and style without
having seen the members. A member's likelihood then still stands out; a non-member that is
merely in-domain no longer does.

What finemem does (`audit.membership.spv_*`): the prompts are those of the **non-member pool
not among the non-members scored** (the pool DC-PDD counts; the paper prompts with short
chunks of a public in-domain corpus, which this pool stands in for), `spv_prompts` of them
(32); the audited checkpoint writes one seeded sample of `spv_new_tokens` (48) tokens after
each; the run's base is fine-tuned on those (prompt, generation) pairs with the run's method
for `spv_steps` (20) optimizer steps (lr `spv_lr`, default the run's) by finemem's own
training path, into RUN_DIR/references/<key>/ (one reference per audited checkpoint, reused
by a rerun). Only the self-prompt reference is implemented: the paper's second half, the
probabilistic variation (a paraphrase-symmetrised likelihood), is not; its ablation without it
is this score.
"""

from __future__ import annotations

import numpy as np

from finemem.audit.attacks import AttackInputs, register_attack
from finemem.metrics import membership as mi


def spv_score(token_lp, self_ref_token_lp) -> np.ndarray:
    r"""Mean log-likelihood under the audited model minus under the self-calibrated
    reference; member when higher.

    .. math:: s_i = \frac1{T_i}\sum_t \log p_\theta(x_{i,t} \mid x_{i,<t})
              - \frac1{T_i}\sum_t \log p_\phi(x_{i,t} \mid x_{i,<t})

    with :math:`\theta` the audited model and :math:`\phi` the base fine-tuned on
    :math:`\theta`'s own generations.

    >>> spv_score([np.log([0.5, 0.5]), np.log([0.25])],
    ...           [np.log([0.25, 0.25]), np.log([0.5])]).round(4).tolist()  # ln 2, -ln 2
    [0.6931, -0.6931]
    """
    return mi.reference_attack(token_lp, self_ref_token_lp)


@register_attack("spv", member_when="higher", needs=("self_reference",),
                 paper="Fu et al., NeurIPS 2024 (SPV-MIA, self-prompt reference only)")
def spv(inp: AttackInputs):
    """mean log p minus a reference fine-tuned on the model's own generations"""
    return spv_score(inp.logprobs, [s.logprob for s in inp.need("self_reference")])
