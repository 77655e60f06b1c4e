"""The `membership` probe: can an attacker with log-probabilities tell members from non-members?

Per checkpoint, from one engine scoring pass over members (training examples, from the
manifest) and non-members (`audit.nonmembers`, else the "test" eval set), plus what each
attack asks for (the base's pass, cached in the store and reused by every later checkpoint;
a prefixed pass for ReCaLL; perturbed neighbours; the earlier checkpoints' stored losses):
- the attacks of `audit.membership.attacks` (one module each in `finemem.audit.attacks`;
  default: loss, zlib, Min-K%, Min-K%++, reference, RMIA);
- per attack: ROC AUC with a stratified bootstrap interval, and TPR at each requested FPR with
  a Clopper-Pearson interval; an FPR the non-members cannot resolve (fewer than 1/FPR) is
  refused with the count needed, the rest still stored;
- the blind baseline (`finemem.metrics.blind`): a model-free text classifier's AUC with its
  interval; when the interval lies above 0.55 the membership figures measure a distribution
  shift, and the report and `recommend --max-leakage` say so;
- the members' greedy-extraction rate, per member its mean NLL and exact-extraction flag
  (read by `finemem trajectories`), and per scored example its mean NLL and each attack's
  score (read by the trajectory attack and `finemem risk`).
Everything is stored under the split "membership" (settings: attack, fpr, nonmembers).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, field_validator

from finemem.audit import measures
from finemem.audit.attacks import (attack_names, attack_scores, check_attacks, needs_of,
                                   refused_fprs, separation)
from finemem.audit.attacks._provide import HISTORY_SPLIT, providers
from finemem.audit.members import seeded_sample
from finemem.audit.probes import Probe, register_probe
from finemem.config import Section


class MembershipConfig(Section):
    members: int = Field(200, gt=1, description="training examples sampled as members")
    nonmembers: int = Field(200, gt=1, description="non-members sampled (audit.nonmembers or "
                                                  "the test set)")
    attacks: list[str] = Field(default_factory=lambda: attack_names(default_only=True),
                               min_length=1, description="attacks to run (`finemem attacks` "
                                                         "lists them)")
    k: float = Field(0.2, gt=0, le=1, description="Min-K% / Min-K%++: share of tokens kept")
    fprs: list[float] = Field([0.001, 0.01], description="false-positive rates for TPR")
    rmia_a: float = Field(0.3, ge=0, le=1, description="RMIA's offline scaling a")
    rmia_gamma: float = Field(1.0, gt=0, description="RMIA's likelihood-ratio threshold")
    recall_shots: int = Field(2, ge=1, description="ReCaLL: non-members in the prefix (taken "
                                                  "from the pool, not among the non-members)")
    neighbours: int = Field(8, ge=1, description="neighbourhood: perturbed copies per example")
    swap_rate: float = Field(0.15, gt=0, le=1, description="neighbourhood: share of words "
                                                          "swapped per copy")
    dcpdd_cap: float = Field(0.01, gt=0, description="DC-PDD: cap a on each token's score")
    spv_prompts: int = Field(32, ge=1, description="spv: pool prompts the model writes after "
                                                  "(its texts train the reference)")
    spv_new_tokens: int = Field(48, ge=1, description="spv: tokens generated per prompt")
    spv_steps: int = Field(20, ge=1, description="spv: optimizer steps of the reference's "
                                                "fine-tune")
    spv_lr: float | None = Field(None, gt=0, description="spv: the reference's learning rate "
                                                        "(None = the run's)")
    blind_folds: int = Field(5, ge=2, description="blind baseline: cross-validation folds")
    n_boot: int = Field(1000, ge=100, description="bootstrap resamples of the AUC interval")
    seed: int = Field(0, description="which members / non-members are sampled")

    @field_validator("attacks")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from finemem.errors import UserError

        try:
            return check_attacks(v)
        except UserError as e:
            raise ValueError(e.message if hasattr(e, "message") else str(e)) from None


@register_probe("membership")
class Membership(Probe):
    Config = MembershipConfig
    default = False
    needs = ("likelihood",)
    description = "membership inference: attacks, AUC and TPR at low FPR with intervals, " \
                  "and the blind (text-only) baseline"
    version = 2  # the blind baseline and per-example scores

    def prepare(self, ctx) -> None:
        from finemem.errors import UserError

        c = self.cfg
        bad = [f for f in c.fprs if not 0 < f < 1]
        if bad:
            raise UserError(f"every FPR must be in (0, 1); got {bad[0]}",
                            field="audit.membership.fprs")
        self.mem = [e for e, _ in ctx.members(n=c.members, seed=c.seed)]
        need = needs_of(list(c.attacks))
        extra = c.recall_shots if "prefixed" in need else 0
        self.non = ctx.nonmembers(n=c.nonmembers, seed=c.seed, members=self.mem)
        self.prefix = []
        if extra:
            # ReCaLL's prefix comes from beyond the scored non-members, so adding the attack
            # does not change who is scored (the trajectory reads earlier checkpoints' rows
            # of the same examples); only an exhausted pool gives up scored ones for it
            chosen = {str(e.id) for e in self.non}
            rest = [e for e in ctx.nonmembers(n=None, seed=c.seed, members=self.mem)
                    if str(e.id) not in chosen]
            if len(rest) >= extra:
                self.prefix = seeded_sample(rest, extra, c.seed)
            elif len(self.non) <= extra + 1:
                raise UserError(f"ReCaLL needs {extra} non-members for its prefix besides the "
                                f"non-members scored; the pool has {len(self.non)}",
                                field="audit.membership.recall_shots")
            else:
                self.prefix = self.non[len(self.non) - extra:]
                self.non = self.non[: len(self.non) - extra]
        self.pool = []
        if need & {"frequency", "neighbours", "self_reference"}:
            # the reference corpus: non-members that are not scored (else the table has seen
            # the non-members' own tokens)
            scored = {str(e.id) for e in self.non} | {str(e.id) for e in self.prefix}
            every = ctx.nonmembers(n=None, seed=c.seed, members=self.mem)
            unscored = [e for e in every if str(e.id) not in scored]
            if "self_reference" in need and not unscored:
                # prompting with the scored non-members would fit the reference to them
                raise UserError("the spv attack prompts the model with non-members that are "
                                "not scored, and the pool has none beyond the "
                                f"{len(self.non)} scored: lower audit.membership.nonmembers "
                                "or give a larger audit.nonmembers / test set",
                                field="audit.membership.attacks")
            self.pool = unscored or list(self.non)
        self.loss_on = ctx.cfg.data.loss_on
        self.refused = refused_fprs(c.fprs, len(self.non))
        if self.refused:
            from rich.console import Console

            for why in self.refused.values():
                Console(stderr=True).print(f"[yellow]membership:[/] {why}")
        self.inputs = [self.loss_on, [[e.id, e.prompt, e.completion] for e in self.mem],
                       [[e.id, e.prompt, e.completion] for e in self.non],
                       [e.id for e in self.prefix], len(self.pool)]

    def _texts(self, examples) -> list[str]:
        return [(e.prompt + e.completion) if self.loss_on == "all" else e.completion
                for e in examples]

    def _blind(self, ctx):
        """The blind baseline over the whole texts (prompt and completion), once per audit."""
        from finemem.metrics import membership as mi
        from finemem.metrics.blind import blind_baseline_scores

        def run():
            c = self.cfg
            sm, sn = blind_baseline_scores([e.prompt + e.completion for e in self.mem],
                                           [e.prompt + e.completion for e in self.non],
                                           folds=c.blind_folds, seed=c.seed)
            auc = mi.membership_auc(sm, sn)
            lo, hi = mi.auc_interval(sm, sn, n_boot=c.n_boot, seed=c.seed)
            return auc, lo, hi
        return ctx.once(("blind-baseline", self.done_key()), run)

    def requests(self, ctx, ref) -> list:
        return [ctx.score_request(self.mem + self.non, loss_on=self.loss_on)]

    def run(self, ctx, ref, model) -> None:
        c = self.cfg
        exs = self.mem + self.non
        ctx.phase(f"membership: scoring {len(self.mem)} members, {len(self.non)} non-members")
        scores = ctx.score(ref, model, exs, loss_on=self.loss_on)
        keep = np.array([len(s) > 0 for s in scores])
        n_mem = len(self.mem)
        kept = np.flatnonzero(keep)
        pos = {int(i): j for j, i in enumerate(kept)}
        mem_idx = np.flatnonzero(keep[:n_mem])
        non_idx = np.flatnonzero(keep[n_mem:]) + n_mem
        kept_exs = [exs[i] for i in kept]
        sc = [scores[i] for i in kept]
        opts = {"recall_shots": c.recall_shots, "neighbours": c.neighbours,
                "swap_rate": c.swap_rate, "dcpdd_cap": c.dcpdd_cap, "seed": c.seed,
                "spv_prompts": c.spv_prompts, "spv_new_tokens": c.spv_new_tokens,
                "spv_steps": c.spv_steps, "spv_lr": c.spv_lr}
        provide = providers(ctx, ref, model, kept_exs, loss_on=self.loss_on,
                            prefix=self.prefix, pool=self.pool, options=opts)
        for what in ("base", "prefixed", "neighbours", "self_reference"):
            if what in needs_of(list(c.attacks)):
                ctx.phase(f"membership: {what} scores")
        m_sel = [pos[int(i)] for i in mem_idx]
        n_sel = [pos[int(i)] for i in non_idx]
        s = attack_scores(list(c.attacks), sc, None, self._texts(kept_exs),
                          population=np.array(n_sel, dtype=int), k=c.k, rmia_a=c.rmia_a,
                          rmia_gamma=c.rmia_gamma, options=opts, provide=provide)
        for attack in c.attacks:
            for name, settings, st in separation(attack, s[attack][m_sel], s[attack][n_sel],
                                                 fprs=list(c.fprs), n_boot=c.n_boot,
                                                 seed=c.seed):
                ctx.put(ref, "membership", name, st.value, n=st.n, lo=st.lo, hi=st.hi,
                        settings=settings)
        auc, lo, hi = self._blind(ctx)
        ctx.put(ref, "membership", "blind_baseline_auc", auc, n=len(self.mem), lo=lo, hi=hi,
                settings={"nonmembers": len(self.non), "folds": c.blind_folds})
        kept_ids = [str(e.id) for e in kept_exs]
        ctx.put_examples(ref, HISTORY_SPLIT, "mean_nll", kept_ids, [x.nll_mean for x in sc])
        ctx.put_values(ref, HISTORY_SPLIT, "attack_scores", kept_ids,
                       [{a: float(s[a][j]) for a in c.attacks} for j in range(len(kept_ids))])
        is_mem = set(m_sel)
        ctx.put_values(ref, HISTORY_SPLIT, "is_member", kept_ids,
                       [j in is_mem for j in range(len(kept_ids))])
        mem_scores = [scores[i] for i in mem_idx]
        ids = [self.mem[i].id for i in mem_idx]
        exact = np.array([sc_.exact for sc_ in mem_scores], dtype=float)
        st = measures.rate_stat(exact.astype(bool))
        ctx.put(ref, "membership", "exact_greedy_extractable", st.value, n=st.n, lo=st.lo,
                hi=st.hi)
        ctx.put_examples(ref, "membership", "mean_nll", ids, [x.nll_mean for x in mem_scores])
        ctx.put_examples(ref, "membership", "exact_greedy_extractable", ids, exact)
