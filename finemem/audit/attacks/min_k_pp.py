"""Min-K%++ (Zhang et al. 2024): Min-K% over per-token normalised log p."""

from finemem.audit.attacks import AttackInputs, register_attack
from finemem.metrics import membership as mi


@register_attack("min_k_pp", member_when="higher", paper="Zhang et al., ICLR 2025",
                 default=True)
def min_k_pp(inp: AttackInputs):
    """Min-K% of (log p - mu) / sigma"""
    return mi.min_k_pp_attack(inp.logprobs, [s.mu for s in inp.scores],
                              [s.sigma for s in inp.scores], k=inp.option("k", 0.2))
