"""Glue between engine scores and `finemem.metrics.membership`, shared by the `membership` and
`canaries` probes: every attack's per-example score from one scoring pass (and the base's,
from `AuditContext.base_scores`), and the separation statistics with their intervals or
refusals.

Usage (inside a probe):
    s = attack_scores(["loss", "rmia"], scores, base_scores, texts, population=non_idx)
    for name, settings, st in separation("loss", s["loss"][mem], s["loss"][non], fprs=[0.01]):
        ctx.put(ref, "members", name, st.value, n=st.n, lo=st.lo, hi=st.hi, settings=settings)
"""

from __future__ import annotations

import numpy as np

from finemem.audit.measures import Stat
from finemem.metrics import membership as mi


def attack_scores(attacks: list[str], scores: list, base_scores: list | None, texts: list[str],
                  *, population: np.ndarray, k: float = 0.2, rmia_a: float = 0.3,
                  rmia_gamma: float = 1.0) -> dict[str, np.ndarray]:
    """Per-example score of each attack over one list of examples ((n,) arrays, each attack's
    own sign: `mi.ATTACKS`). `scores` / `base_scores` are the `TokenScores` of the examples
    under the audited model and the base; `population` indexes the non-members (RMIA's Z,
    each left out of its own comparison)."""
    lp = [s.logprob for s in scores]
    out: dict[str, np.ndarray] = {}
    for a in attacks:
        if a == "loss":
            out[a] = mi.loss_attack(lp)
        elif a == "zlib":
            out[a] = mi.zlib_attack(lp, texts)
        elif a == "min_k":
            out[a] = mi.min_k_attack(lp, k=k)
        elif a == "min_k_pp":
            out[a] = mi.min_k_pp_attack(lp, [s.mu for s in scores], [s.sigma for s in scores],
                                        k=k)
        elif a == "reference":
            out[a] = mi.reference_attack(lp, [s.logprob for s in base_scores])
        elif a == "rmia":
            m = -mi.loss_attack(lp)
            r = -mi.loss_attack([s.logprob for s in base_scores])
            pop = np.asarray(population, dtype=int)
            self_idx = np.full(len(m), -1)
            self_idx[pop] = np.arange(pop.size)
            out[a] = mi.rmia_attack(m, r, m[pop], r[pop], a=rmia_a, gamma=rmia_gamma,
                                    self_index=self_idx)
        else:  # pragma: no cover - the probe configs list the attacks
            raise ValueError(a)
    return out


def refused_fprs(fprs: list[float], n_nonmembers: int) -> dict[float, str]:
    """FPRs whose TPR cannot be given with this many non-members -> the reason."""
    return {f: f"TPR at {f:g} FPR refused: needs >= {mi.needed_nonmembers(f)} non-members, "
               f"has {n_nonmembers}"
            for f in fprs if n_nonmembers < mi.needed_nonmembers(f)}


def separation(attack: str, s_mem, s_non, *, fprs: list[float], n_boot: int = 1000,
               seed: int = 0) -> list[tuple[str, dict, Stat]]:
    """(registry name, settings, Stat): the attack's ROC AUC with its stratified bootstrap
    interval, and its TPR at each FPR that the non-members allow, with its Clopper-Pearson
    interval. n is the number of members; settings name the attack, FPR and non-members."""
    side = mi.ATTACKS[attack]
    m, n = np.asarray(s_mem, float), np.asarray(s_non, float)
    base = {"attack": attack, "nonmembers": int(n.size)}
    auc = mi.membership_auc(m, n, member_when=side)
    lo, hi = mi.auc_interval(m, n, member_when=side, n_boot=n_boot, seed=seed)
    out = [("membership_auc", dict(base), Stat(auc, int(m.size), lo, hi))]
    for f in fprs:
        if n.size >= mi.needed_nonmembers(f) and m.size:
            tpr, (tlo, thi), _ = mi.tpr_at_fpr(m, n, fpr=f, member_when=side)
            out.append(("membership_tpr_at_fpr", {**base, "fpr": f},
                        Stat(tpr, int(m.size), tlo, thi)))
    return out
