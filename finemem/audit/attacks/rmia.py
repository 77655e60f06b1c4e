"""RMIA (Zarifzadeh et al. 2024), offline, with the base as the one reference model and the
non-members as the population Z (each left out of its own comparison)."""

import numpy as np

from finemem.audit.attacks import AttackInputs, register_attack
from finemem.metrics import membership as mi


@register_attack("rmia", member_when="higher", needs=("base",),
                 paper="Zarifzadeh et al., ICML 2024", default=True)
def rmia(inp: AttackInputs):
    """share of the population beaten by a likelihood ratio"""
    m = -mi.loss_attack(inp.logprobs)
    r = -mi.loss_attack([s.logprob for s in inp.need("base")])
    pop = inp.population
    self_idx = np.full(len(m), -1)
    self_idx[pop] = np.arange(pop.size)
    return mi.rmia_attack(m, r, m[pop], r[pop], a=inp.option("rmia_a", 0.3),
                          gamma=inp.option("rmia_gamma", 1.0), self_index=self_idx)
