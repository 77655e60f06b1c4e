"""The zlib attack (Carlini et al. 2021): mean NLL over the zlib length of the text."""

from finemem.audit.attacks import AttackInputs, register_attack
from finemem.metrics import membership as mi


@register_attack("zlib", member_when="lower", paper="Carlini et al., USENIX Security 2021",
                 default=True)
def zlib(inp: AttackInputs):
    """mean NLL over zlib-compressed bytes"""
    return mi.zlib_attack(inp.logprobs, inp.texts)
