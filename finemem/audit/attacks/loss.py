"""The loss attack (Yeom et al. 2018): an example's mean NLL; member when lower."""

from finemem.audit.attacks import AttackInputs, register_attack
from finemem.metrics import membership as mi


@register_attack("loss", member_when="lower", paper="Yeom et al., CSF 2018", default=True)
def loss(inp: AttackInputs):
    """mean NLL of the target"""
    return mi.loss_attack(inp.logprobs)
