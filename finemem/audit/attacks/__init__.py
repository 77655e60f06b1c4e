"""Membership attacks, one module each, and the glue between engine scores and
`finemem.metrics.membership` shared by the `membership` and `canaries` probes: every
attack's per-example score, and the separation statistics with their intervals or refusals.

Usage (inside a probe):
    s = attack_scores(["loss", "rmia"], scores, base_scores, texts, population=non_idx)
    for name, settings, st in separation("loss", s["loss"][mem], s["loss"][non], fprs=[0.01]):
        ctx.put(ref, "members", name, st.value, n=st.n, lo=st.lo, hi=st.hi, settings=settings)

Adding an attack is one file in this package (the package imports its modules itself):

    @register_attack("loss", member_when="lower", paper="Yeom et al. 2018")
    def loss(inp: AttackInputs) -> np.ndarray:          # (n,) one score per example
        return mi.loss_attack(inp.logprobs)

An attack never calls a model. What it needs beyond the audited model's teacher-forced scores
it names in `needs`, and asks for with `inp.need(what)`; the probe answers through the audit
context (the engine, cached in the store). The needs a probe can answer are in `NEEDS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from finemem.audit.measures import Stat
from finemem.errors import unknown_name
from finemem.metrics import membership as mi
from finemem.registry import import_modules

NEEDS = {
    "base": "the base model's TokenScores of the same examples",
    "prefixed": "TokenScores of each example with a non-member prefix before its context",
    "neighbours": "(n, k) mean NLL of k perturbed copies of each example's scored text",
    "token_ids": "each example's target token ids, aligned with its TokenScores",
    "frequency": "(V,) token frequencies of a reference corpus (the non-member pool)",
    "history": "(c, n) mean NLL of each example at every checkpoint so far, base first",
    "self_reference": "TokenScores of the same examples under the base fine-tuned on the "
                      "audited model's own generations (a training run per checkpoint)",
}


@dataclass(frozen=True)
class AttackSpec:
    name: str
    fn: Callable[["AttackInputs"], np.ndarray]
    member_when: str              # the side of the score that means "member"
    needs: tuple[str, ...] = ()
    paper: str = ""
    default: bool = False         # run when audit.membership.attacks is not set

    @property
    def description(self) -> str:
        return (self.fn.__doc__ or "").strip().splitlines()[0] if self.fn.__doc__ else ""


ATTACKS: dict[str, AttackSpec] = {}


def register_attack(name: str, *, member_when: str, needs: tuple[str, ...] = (),
                    paper: str = "", default: bool = False):
    """Decorator filing a score function `fn(inp: AttackInputs) -> (n,) array` as attack
    `name`."""
    if member_when not in ("higher", "lower"):
        raise ValueError(f"attack {name}: member_when must be 'higher' or 'lower'")
    bad = [n for n in needs if n not in NEEDS]
    if bad:
        raise ValueError(f"attack {name}: unknown need {bad[0]!r}; known: {sorted(NEEDS)}")

    def deco(fn):
        if name in ATTACKS and ATTACKS[name].fn is not fn:
            raise ValueError(f"attack '{name}' is already registered by {ATTACKS[name].fn}")
        ATTACKS[name] = AttackSpec(name, fn, member_when, tuple(needs), paper, default)
        return fn
    return deco


def load_attacks() -> dict[str, AttackSpec]:
    import_modules(__name__)
    return ATTACKS


def get_attack(name: str, *, field_name: str | None = None) -> AttackSpec:
    load_attacks()
    if name not in ATTACKS:
        raise unknown_name("attack", name, ATTACKS, field=field_name)
    return ATTACKS[name]


def attack_names(*, default_only: bool = False) -> list[str]:
    return [n for n, a in load_attacks().items() if a.default or not default_only]


def check_attacks(names: list[str], *, answerable: set[str] | None = None,
                  field_name: str | None = None) -> list[str]:
    """`names` when each is registered and its needs are among `answerable` (None = all);
    else the `UserError` with the closest name or the need that cannot be answered."""
    from finemem.errors import UserError

    for n in names:
        spec = get_attack(n, field_name=field_name)
        if answerable is not None:
            missing = [x for x in spec.needs if x not in answerable]
            if missing:
                ok = [a for a, s in ATTACKS.items() if set(s.needs) <= answerable]
                raise UserError(f"attack '{n}' needs {missing[0]} ({NEEDS[missing[0]]}), which "
                                f"this probe cannot give; use one of: {', '.join(ok)}",
                                field=field_name)
    return list(names)


def needs_of(names: list[str]) -> set[str]:
    return {x for n in names for x in get_attack(n).needs}


@dataclass
class AttackInputs:
    """What an attack reads: the audited model's `TokenScores` per example (n of them), the
    scored texts, which examples are the non-member population, the probe's options
    (`k`, `rmia_a`, ...), and `need(what)` for anything in `NEEDS`."""
    scores: list
    texts: list[str]
    population: np.ndarray
    options: dict = field(default_factory=dict)
    provide: dict[str, Callable[[], object]] = field(default_factory=dict)
    _got: dict = field(default_factory=dict, repr=False)

    @property
    def logprobs(self) -> list[np.ndarray]:
        return [s.logprob for s in self.scores]

    def option(self, name: str, default):
        return self.options.get(name, default)

    def need(self, what: str):
        if what not in self._got:
            if what not in self.provide:
                raise KeyError(f"no provider for {what!r} ({NEEDS.get(what, '?')})")
            self._got[what] = self.provide[what]()
        return self._got[what]


def attack_scores(attacks: list[str], scores: list, base_scores: list | None, texts: list[str],
                  *, population: np.ndarray, k: float = 0.2, rmia_a: float = 0.3,
                  rmia_gamma: float = 1.0, options: dict | None = None,
                  provide: dict | None = None) -> dict[str, np.ndarray]:
    """Per-example score of each attack over one list of examples ((n,) arrays, each attack's
    own sign: `ATTACKS[a].member_when`). `scores` / `base_scores` are the `TokenScores` of the
    examples under the audited model and the base; `population` indexes the non-members;
    `provide` answers the other needs (name -> a function of nothing)."""
    prov = dict(provide or {})
    if base_scores is not None:
        prov["base"] = lambda: base_scores
    opts = {"k": k, "rmia_a": rmia_a, "rmia_gamma": rmia_gamma, **(options or {})}
    inp = AttackInputs(scores, texts, np.asarray(population, dtype=int), opts, prov)
    return {a: np.asarray(get_attack(a).fn(inp), dtype=float) for a in attacks}


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
    side = get_attack(attack).member_when
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
