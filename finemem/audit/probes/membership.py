"""The `membership` probe: can an attacker with log-probabilities tell members from non-members?

Per checkpoint, from one engine scoring pass over members (training examples, from the
manifest) and non-members (`audit.nonmembers`, else the "test" eval set), plus the base
model's pass (step 0, cached in the store and reused by every later checkpoint):
- six attacks (`finemem.metrics.membership`): loss, zlib, Min-K%, Min-K%++, reference (minus
  the base's log-likelihood) and RMIA (the base as reference model, non-members as
  population);
- per attack: ROC AUC with a stratified bootstrap interval, and TPR at each requested FPR with
  a Clopper-Pearson interval; an FPR the non-members cannot resolve (fewer than 1/FPR) is
  refused with the count needed, the rest still stored;
- the members' greedy-extraction rate, and per member its mean NLL and exact-extraction flag
  (read by `finemem trajectories`).
Everything is stored under the split "membership" (settings: attack, fpr, nonmembers).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from finemem.audit import measures
from finemem.audit.attacks import attack_scores, refused_fprs, separation
from finemem.audit.probes import Probe, register_probe
from finemem.config import Section
from finemem.metrics.membership import ATTACKS

Attack = Literal["loss", "zlib", "min_k", "min_k_pp", "reference", "rmia"]


class MembershipConfig(Section):
    members: int = Field(200, gt=1, description="training examples sampled as members")
    nonmembers: int = Field(200, gt=1, description="non-members sampled (audit.nonmembers or "
                                                  "the test set)")
    attacks: list[Attack] = Field(list(ATTACKS), min_length=1, description="attacks to run")
    k: float = Field(0.2, gt=0, le=1, description="Min-K% / Min-K%++: share of tokens kept")
    fprs: list[float] = Field([0.001, 0.01], description="false-positive rates for TPR")
    rmia_a: float = Field(0.3, ge=0, le=1, description="RMIA's offline scaling a")
    rmia_gamma: float = Field(1.0, gt=0, description="RMIA's likelihood-ratio threshold")
    n_boot: int = Field(1000, ge=100, description="bootstrap resamples of the AUC interval")
    seed: int = Field(0, description="which members / non-members are sampled")


@register_probe("membership")
class Membership(Probe):
    Config = MembershipConfig
    default = False
    needs = ("likelihood",)
    description = "membership inference: 6 attacks, AUC and TPR at low FPR with intervals"

    def prepare(self, ctx) -> None:
        from finemem.errors import UserError

        c = self.cfg
        bad = [f for f in c.fprs if not 0 < f < 1]
        if bad:
            raise UserError(f"every FPR must be in (0, 1); got {bad[0]}",
                            field="audit.membership.fprs")
        self.mem = [e for e, _ in ctx.members(n=c.members, seed=c.seed)]
        self.non = ctx.nonmembers(n=c.nonmembers, seed=c.seed, members=self.mem)
        self.loss_on = ctx.cfg.data.loss_on
        self.refused = refused_fprs(c.fprs, len(self.non))
        if self.refused:
            from rich.console import Console

            for why in self.refused.values():
                Console(stderr=True).print(f"[yellow]membership:[/] {why}")
        self.inputs = [self.loss_on, [[e.id, e.prompt, e.completion] for e in self.mem],
                       [[e.id, e.prompt, e.completion] for e in self.non]]

    def _texts(self, examples) -> list[str]:
        return [(e.prompt + e.completion) if self.loss_on == "all" else e.completion
                for e in examples]

    def run(self, ctx, ref, model) -> None:
        c = self.cfg
        exs = self.mem + self.non
        ctx.phase(f"membership: scoring {len(self.mem)} members, {len(self.non)} non-members")
        scores = ctx.score(ref, model, exs, loss_on=self.loss_on)
        base = None
        if {"reference", "rmia"} & set(c.attacks):
            ctx.phase("membership: base scores")
            base = ctx.base_scores(ref, model, exs, loss_on=self.loss_on)
        keep = np.array([len(s) > 0 for s in scores])
        n_mem = len(self.mem)
        pop = np.flatnonzero(keep[n_mem:]) + n_mem
        mem_idx, non_idx = np.flatnonzero(keep[:n_mem]), pop
        # RMIA's population indexes the kept examples only
        kept = np.flatnonzero(keep)
        pos = {int(i): j for j, i in enumerate(kept)}
        sc = [scores[i] for i in kept]
        bs = None if base is None else [base[i] for i in kept]
        s = attack_scores(list(c.attacks), sc, bs, self._texts([exs[i] for i in kept]),
                          population=np.array([pos[int(i)] for i in non_idx]), k=c.k,
                          rmia_a=c.rmia_a, rmia_gamma=c.rmia_gamma)
        m_sel = [pos[int(i)] for i in mem_idx]
        n_sel = [pos[int(i)] for i in non_idx]
        for attack in c.attacks:
            for name, settings, st in separation(attack, s[attack][m_sel], s[attack][n_sel],
                                                 fprs=list(c.fprs), n_boot=c.n_boot,
                                                 seed=c.seed):
                ctx.put(ref, "membership", name, st.value, n=st.n, lo=st.lo, hi=st.hi,
                        settings=settings)
        mem_scores = [scores[i] for i in mem_idx]
        ids = [self.mem[i].id for i in mem_idx]
        exact = np.array([sc_.exact for sc_ in mem_scores], dtype=float)
        st = measures.rate_stat(exact.astype(bool))
        ctx.put(ref, "membership", "exact_greedy_extractable", st.value, n=st.n, lo=st.lo,
                hi=st.hi)
        ctx.put_examples(ref, "membership", "mean_nll", ids, [x.nll_mean for x in mem_scores])
        ctx.put_examples(ref, "membership", "exact_greedy_extractable", ids, exact)
