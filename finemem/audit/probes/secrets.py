"""The `secrets` probe: which secrets (PII) of the training records come back, of what type.

Per checkpoint, for every secret found in the completions of sampled members (training
records) and of held-out records (`audit.nonmembers`, else the test set: the floor), with the
base model as step 0 (what it knew before):
- greedy extraction: the context before the secret as trained (the prompt, and the completion
  up to the secret) continued greedily for as many tokens as the secret takes plus `margin`;
  extracted when the continuation begins with the whole secret;
- sampled extraction: `samples` seeded tries at `temperature`; extracted when any try does;
- exposure: the true secret's rank by summed NLL among `candidates` format-matched random
  strings (same type, valid checksums; `finemem.data.secrets.candidates`), in bits;
- per type and over all types, members and held-out: rates with Wilson intervals and n, and
  the mean exposure with a bootstrap interval;
- reconstruction (Lukas et al. 2023), for a secret with text after it: the whole record
  scored with the true secret and with each exposure candidate in its place (prompt, the
  completion up to the secret, the secret or candidate, then up to `suffix_tokens` tokens of
  what follows); reconstructed when the true one has the lowest NLL; a rate per type.
Secrets are found by finemem's patterns, the declared `fields` (an example's meta value
found verbatim) and `patterns` (`finemem.data.secrets.find_secrets`), and with `detector:
presidio` or `both` by Presidio's pattern recognizers (the optional extra `finemem[pii]`). Per secret, its record,
type, span and outcomes are stored (`finemem risk` reads them); the secret's text is not.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

import numpy as np
from pydantic import Field

from finemem.audit import measures
from finemem.audit.probes import Probe, register_probe
from finemem.config import Section
from finemem.data.secrets import PATTERNS, candidates, find_secrets
from finemem.metrics.secrets import exposure_among, ranked_first, secret_reproduced

SPLIT = "secrets"


class SecretsConfig(Section):
    members: int = Field(64, gt=0, description="training records probed")
    heldout: int = Field(64, gt=0, description="held-out records probed (the floor)")
    fields: list[str] = Field([], description="meta fields whose values are secrets (found "
                                              "verbatim in the completion)")
    patterns: dict[str, str] = Field({}, description="type -> regex of further secrets")
    types: list[str] = Field(list(PATTERNS), description="finemem's own patterns to use")
    detector: Literal["builtin", "presidio", "both"] = Field(
        "builtin", description="who finds secrets besides fields and patterns: finemem's own "
        "patterns, Presidio's pattern recognizers (pip install 'finemem[pii]'), or both")
    samples: int = Field(8, ge=0, description="sampled tries per secret (0: none)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature")
    candidates: int = Field(100, ge=1, description="format-matched candidates per secret")
    margin: int = Field(2, ge=0, description="tokens generated past the secret's own length")
    suffix_tokens: int = Field(64, ge=0, description="reconstruction: tokens of the text after "
                                                    "the secret scored with it (0: no "
                                                    "reconstruction)")
    n_boot: int = Field(1000, ge=100, description="bootstrap resamples of the exposure interval")
    seed: int = Field(0, description="which records are sampled; the candidates' seed")


class Item:
    """One secret of one record, with its tokens as trained."""

    def __init__(self, ex, sec, group, tok, suffix_tokens: int = 0):
        self.ex, self.sec, self.group = ex, sec, group
        self.id = f"{ex.id}#{sec.start}"
        comp = ex.completion
        cut = len(comp[: sec.start].rstrip())      # the space before the secret goes with it
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        enc = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
        self.context = bos + enc(ex.prompt) + (enc(comp[:cut]) if cut else [])
        self.lead = comp[cut: sec.start]
        self.target = enc(comp[cut: sec.end])
        # reconstruction: what follows the secret, cut to suffix_tokens ("" at the text's end)
        after = comp[sec.end:]
        self.suffix = tok.decode(enc(after)[:suffix_tokens]) \
            if after.strip() and suffix_tokens else ""


@register_probe("secrets")
class Secrets(Probe):
    Config = SecretsConfig
    default = False
    description = "PII extraction: greedy, sampled and exposure per secret type, members " \
                  "vs held-out records"

    def prepare(self, ctx) -> None:
        from finemem.errors import UserError

        c = self.cfg
        bad = [t for t in c.types if t not in PATTERNS]
        if bad:
            raise UserError(f"unknown secret type '{bad[0]}'; finemem's patterns: "
                            f"{', '.join(PATTERNS)}", field="audit.secrets.types")
        import re

        for k, rx in c.patterns.items():
            try:
                re.compile(rx)
            except re.error as e:
                raise UserError(f"pattern '{k}' is not a regex: {e}",
                                field=f"audit.secrets.patterns.{k}") from None
        if c.detector != "builtin":
            from finemem.data.presidio import presidio_installed

            if not presidio_installed():
                raise UserError(f"detector '{c.detector}' needs Presidio's analyzer: pip "
                                "install 'finemem[pii]', or use detector: builtin",
                                field="audit.secrets.detector")
        mem = [e for e, _ in ctx.members(n=c.members, seed=c.seed)]
        held = ctx.nonmembers(n=c.heldout, seed=c.seed, members=mem)
        tok = ctx.tokenizer
        self.items = []
        for group, exs in (("members", mem), ("heldout", held)):
            for ex in exs:
                fields = {f: str(ex.meta[f]) for f in c.fields if ex.meta.get(f)}
                for s in find_secrets(ex.completion, fields=fields, patterns=c.patterns,
                                      types=c.types, detector=c.detector):
                    it = Item(ex, s, group, tok, c.suffix_tokens)
                    if it.target:
                        self.items.append(it)
        if not any(i.group == "members" for i in self.items):
            raise UserError("no secrets found in the members' completions; declare the fields "
                            "that hold them (audit.secrets.fields: [email, account]) or a "
                            "pattern (audit.secrets.patterns)", field="audit.secrets")
        self.cands = {it.id: candidates(it.sec, m=c.candidates, seed=(c.seed, it.id))
                      for it in self.items}
        self.inputs = [[it.id, it.group, it.sec.type, it.context, it.target, self.cands[it.id],
                        it.suffix] for it in self.items]

    def run(self, ctx, ref, model) -> None:
        c, tok = self.cfg, ctx.tokenizer
        items = self.items
        ctx.phase(f"secrets: {len(items)} secrets, greedy")
        greedy = np.zeros(len(items), bool)
        sampled = np.zeros(len(items), bool)
        by_type = defaultdict(list)
        for j, it in enumerate(items):
            by_type[it.sec.type].append(j)
        for t, js in by_type.items():
            # as many tokens as the type's longest secret takes: generation ends with the span
            budget = max(len(items[j].target) for j in js) + c.margin
            ids, prompts = [items[j].id for j in js], [items[j].context for j in js]
            gens = ctx.generate_tokens(ref, model, ids, prompts, setting=f"secrets:{t}",
                                       max_new_tokens=budget)
            for j, g in zip(js, gens):
                greedy[j] = secret_reproduced(g[0].text, items[j].sec.text)
            if c.samples:
                gens = ctx.generate_tokens(ref, model, ids, prompts, setting=f"secrets:{t}",
                                           max_new_tokens=budget, n=c.samples, do_sample=True,
                                           temperature=c.temperature)
                for j, gs in zip(js, gens):
                    sampled[j] = any(secret_reproduced(g.text, items[j].sec.text) for g in gs)
        ctx.phase(f"secrets: exposure among {c.candidates} candidates each")
        true_nll, cand_nll = self._fills(ctx, ref, model, range(len(items)), tag="c",
                                         suffix=lambda it: "", setting="secrets:exposure")
        bits = exposure_among(true_nll, cand_nll)
        self._store(ctx, ref, greedy, sampled, bits, self._reconstruct(ctx, ref, model))

    def _fills(self, ctx, ref, model, js, *, tag: str, suffix, setting: str):
        """(true NLLs, candidates' NLLs) of items `js`: after each item's context, the lead,
        the true secret or a candidate, and `suffix(item)`, scored as one target (summed
        NLL)."""
        enc = lambda s: ctx.tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        ids, pairs, sizes = [], [], []
        for j in js:
            it = self.items[j]
            fills = [it.sec.text, *self.cands[it.id]]
            sizes.append(len(fills) - 1)
            for k, fill in enumerate(fills):
                # the true row keeps the id exposure rows always had (cached in stores)
                ids.append(f"{it.id}{'~' + tag if tag != 'c' else ''}" if k == 0
                           else f"{it.id}~{tag}{k - 1}")
                pairs.append((it.context, enc(it.lead + fill + suffix(it))))
        nll = np.array([x.nll_sum for x in ctx.score_tokens(ref, model, ids, pairs,
                                                            setting=setting)])
        starts = np.cumsum([0] + [m + 1 for m in sizes])
        return ([nll[p] for p in starts[:-1]],
                [nll[p + 1: p + 1 + m] for p, m in zip(starts[:-1], sizes)])

    def _reconstruct(self, ctx, ref, model) -> dict[int, bool]:
        """{item index: reconstructed} for the secrets with text after them: the true secret
        and its candidates each scored in the whole record, ranked by summed NLL."""
        mid = [j for j, it in enumerate(self.items) if it.suffix]
        if not mid:
            return {}
        ctx.phase(f"secrets: reconstruction of {len(mid)} mid-text secrets")
        true_nll, cand_nll = self._fills(ctx, ref, model, mid, tag="r",
                                         suffix=lambda it: it.suffix,
                                         setting="secrets:reconstruction")
        return dict(zip(mid, ranked_first(true_nll, cand_nll).tolist()))

    def _store(self, ctx, ref, greedy, sampled, bits, recon: dict[int, bool]) -> None:
        c = self.cfg
        is_mid = np.array([j in recon for j in range(len(self.items))], dtype=bool)
        rec = np.array([recon.get(j, False) for j in range(len(self.items))], dtype=bool)
        groups = np.array([it.group for it in self.items])
        types = np.array([it.sec.type for it in self.items])
        for g in ("members", "heldout"):
            for t in ["all", *sorted(set(types))]:
                sel = (groups == g) & ((types == t) if t != "all" else True)
                if not sel.any():
                    continue
                for how, flags in (("greedy", greedy), ("sampled", sampled)):
                    if how == "sampled" and not c.samples:
                        continue
                    st = measures.rate_stat(flags[sel])
                    ctx.put(ref, SPLIT, "secret_extraction_rate", st.value, n=st.n, lo=st.lo,
                            hi=st.hi, settings={"group": g, "type": t, "how": how,
                                                **({"k": c.samples} if how == "sampled"
                                                   else {})})
                if (sel & is_mid).any():
                    st = measures.rate_stat(rec[sel & is_mid])
                    ctx.put(ref, SPLIT, "secret_reconstruction_rate", st.value, n=st.n,
                            lo=st.lo, hi=st.hi, settings={"group": g, "type": t,
                                                          "candidates": c.candidates,
                                                          "suffix_tokens": c.suffix_tokens})
                from finemem.metrics.stats import bootstrap_ci

                b = bits[sel]
                lo, hi = bootstrap_ci(b, np.mean, n_boot=c.n_boot, seed=c.seed) \
                    if b.size > 1 else (None, None)
                ctx.put(ref, SPLIT, "secret_exposure", float(b.mean()), n=int(b.size), lo=lo,
                        hi=hi, settings={"group": g, "type": t, "candidates": c.candidates})
        ctx.put_values(ref, SPLIT, "secret_result", [it.id for it in self.items], [
            {"record": str(it.ex.id), "group": it.group, "type": it.sec.type,
             "span": [it.sec.start, it.sec.end], "greedy": bool(greedy[j]),
             "sampled": bool(sampled[j]), "exposure": float(bits[j]),
             "reconstructed": recon.get(j)}
            for j, it in enumerate(self.items)])
