"""Min-K% (Shi et al. 2024): the mean log p of the k% least likely target tokens."""

from finemem.audit.attacks import AttackInputs, register_attack
from finemem.metrics import membership as mi


@register_attack("min_k", member_when="higher", paper="Shi et al., ICLR 2024", default=True)
def min_k(inp: AttackInputs):
    """mean log p of the k% least likely tokens"""
    return mi.min_k_attack(inp.logprobs, k=inp.option("k", 0.2))
