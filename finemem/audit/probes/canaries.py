"""The `canaries` probe: do the secrets planted by `data.canaries` come back?

Per checkpoint and repetition tier, from one engine pass over the canaries and their
never-inserted twins (RUN_DIR/canaries.jsonl; the secret, the completion, is scored):
- exposure (Carlini et al. 2019): rank of each canary's NLL among its family's twins, with the
  skew-normal extrapolation when the rank saturates; mean over the tier's canaries with a
  bootstrap interval (also per family);
- the greedy-extraction rate (the secret reproduced greedily from its prompt), Wilson interval;
- each attack's ROC AUC and TPR at each FPR, the tier's canaries against all twins;
- per canary its mean NLL and exact-extraction flag (for `finemem trajectories`);
- with `data.canaries.inclusion: half`, per tier the one-run privacy audit's epsilon lower
  bound (Steinke et al. 2023, `finemem.metrics.privacy_audit`) at `audit_confidence`, against
  the delta of the run's DP guarantee (RUN_DIR/dp.json; 0 without DP).
A run trained without canaries is refused with how to rerun.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, field_validator

from finemem.audit import measures
from finemem.audit.attacks import (attack_scores, check_attacks, get_attack, needs_of,
                                   refused_fprs, separation)
from finemem.audit.probes import Probe, register_probe
from finemem.config import Section
from finemem.metrics.membership import exposure_per_canary


class CanariesConfig(Section):
    attacks: list[str] = Field(["loss", "min_k_pp", "reference"], min_length=1,
                               description="attacks run on canaries")
    k: float = Field(0.2, gt=0, le=1, description="Min-K% / Min-K%++: share of tokens kept")
    fprs: list[float] = Field([0.01], description="false-positive rates for TPR (twins are the "
                                                  "negatives)")
    n_boot: int = Field(1000, ge=100, description="bootstrap resamples for intervals")
    # issue 21 hook: the one-run privacy audit (inclusion: half)
    audit_attack: str = Field("reference", description="privacy audit: the attack whose scores "
                                                       "make the guesses (one needing at most "
                                                       "the base)")
    audit_confidence: float = Field(0.95, gt=0, lt=1, description="privacy audit: confidence "
                                                                  "of the epsilon lower bound")
    audit_guess_frac: float = Field(0.1, gt=0, le=0.5, description="privacy audit: share of "
                                    "a tier's candidates guessed 'in' (highest scores) and "
                                    "the same share 'out' (lowest); fixed before the run")

    @field_validator("attacks", "audit_attack")
    @classmethod
    def _known(cls, v: list[str] | str) -> list[str] | str:
        from finemem.errors import UserError

        try:
            names = check_attacks([v] if isinstance(v, str) else v, answerable={"base"})
        except UserError as e:
            raise ValueError(e.message) from None
        return names[0] if isinstance(v, str) else names


@register_probe("canaries")
class CanariesProbe(Probe):
    Config = CanariesConfig
    default = False
    needs = ("likelihood",)
    description = "planted canaries per tier: exposure, extraction rate, attack TPR"

    def prepare(self, ctx) -> None:
        from finemem.data.canaries import read_canaries

        self.cans = read_canaries(ctx.run_dir)
        self.examples = [c.example() for c in self.cans]
        self.tiers = sorted({c.tier for c in self.cans if c.inserted})
        self.refused = refused_fprs(list(self.cfg.fprs), sum(not c.inserted for c in self.cans))
        if self.refused:
            from rich.console import Console

            for why in self.refused.values():
                Console(stderr=True).print(f"[yellow]canaries:[/] {why} (twins)")
        self.inputs = [[c.id, c.tier, c.prompt, c.completion] for c in self.cans]

    def requests(self, ctx, ref) -> list:
        return [ctx.score_request(self.examples, loss_on="completion")]

    def run(self, ctx, ref, model) -> None:
        c = self.cfg
        ctx.phase(f"canaries: scoring {len(self.examples)} canaries and twins")
        scores = ctx.score(ref, model, self.examples, loss_on="completion")
        base = None
        attacks = list(dict.fromkeys([*c.attacks, c.audit_attack]))
        if "base" in needs_of(attacks):
            base = ctx.base_scores(ref, model, self.examples, loss_on="completion")
        twin = np.array([not x.inserted for x in self.cans])
        fam = np.array([x.family for x in self.cans])
        tier = np.array([x.tier for x in self.cans])
        nll = np.array([s.nll_sum for s in scores])
        s = attack_scores(attacks, scores, base, [x.completion for x in self.cans],
                          population=np.flatnonzero(twin), k=c.k)
        for t in self.tiers:
            sel = tier == t
            per, fams = [], {}
            for f in sorted(set(fam[sel])):
                e = exposure_per_canary(nll[sel & (fam == f)], nll[twin & (fam == f)])
                fams[f] = e
                per += list(e)
            for f, e in [("all", np.array(per))] + sorted(fams.items()):
                st = measures.mean_stat(e)
                ctx.put(ref, "canaries", "exposure", st.value, n=st.n, lo=st.lo, hi=st.hi,
                        settings={"tier": int(t), "family": f})
            st = measures.rate_stat(np.array([scores[i].exact for i in np.flatnonzero(sel)]))
            ctx.put(ref, "canaries", "exact_greedy_extractable", st.value, n=st.n, lo=st.lo,
                    hi=st.hi, settings={"tier": int(t)})
            for attack in c.attacks:
                for name, settings, st in separation(attack, s[attack][sel], s[attack][twin],
                                                     fprs=list(c.fprs), n_boot=c.n_boot):
                    ctx.put(ref, "canaries", name, st.value, n=st.n, lo=st.lo, hi=st.hi,
                            settings={**settings, "tier": int(t)})
        self._privacy_audit(ctx, ref, s[c.audit_attack], twin)
        ins = np.flatnonzero(~twin)
        ids = [self.cans[i].id for i in ins]
        ctx.put_examples(ref, "canaries", "mean_nll", ids, [scores[i].nll_mean for i in ins])
        ctx.put_examples(ref, "canaries", "exact_greedy_extractable", ids,
                         [float(scores[i].exact) for i in ins])

    def _privacy_audit(self, ctx, ref, score, twin) -> None:
        """Issue 21 hook: per audit tier, the epsilon lower bound from the coin-flip candidates
        (in: inserted, out: the twins of that tier)."""
        from finemem.metrics.privacy_audit import epsilon_lower_bound

        at = np.array([x.audit_tier for x in self.cans])
        if not at.any():
            return
        c = self.cfg
        dp = ctx.dp_record()
        delta = float(dp["delta"]) if dp else 0.0
        for t in sorted(set(at[at > 0].tolist())):
            sel = at == t
            ins, outs = score[sel & ~twin], score[sel & twin]
            if not len(ins) or not len(outs):
                continue
            eps = epsilon_lower_bound(ins, outs, guess_frac=c.audit_guess_frac,
                                      confidence=c.audit_confidence, delta=delta,
                                      member_when=get_attack(c.audit_attack).member_when)
            ctx.put(ref, "canaries", "epsilon_lower_bound", eps, n=int(sel.sum()),
                    settings={"tier": int(t), "attack": c.audit_attack,
                              "confidence": c.audit_confidence, "delta": delta,
                              "guess_frac": c.audit_guess_frac})
