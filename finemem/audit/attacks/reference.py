"""The reference-model attack (Carlini et al. 2021): log-likelihood minus the base's."""

from finemem.audit.attacks import AttackInputs, register_attack
from finemem.metrics import membership as mi


@register_attack("reference", member_when="higher", needs=("base",),
                 paper="Carlini et al. 2021; Mireshghallah et al. 2022", default=True)
def reference(inp: AttackInputs):
    """mean log p minus the base model's"""
    return mi.reference_attack(inp.logprobs, [s.logprob for s in inp.need("base")])
