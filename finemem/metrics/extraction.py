"""Extraction metrics (paper 2): how close a generated suffix is to the true one, and which
kind of memorization a generation shows (verbatim / paraphrase / idea).

Usage:
    bleu(["the cat sat"], ["the cat sat"])                 # 100.0 (sacrebleu sentence BLEU)
    rouge_l(gens, refs)                                    # mean ROUGE-L F1 (rouge-score)
    embedding_cosine(gen_emb, ref_emb)                     # mean row-wise cosine
    label = categorize(gen, candidates, similarity=sim)    # 'verbatim' | 'idea' | ...
    memorization_ratio(labels, category="verbatim")        # share of generations

Every text-pair metric also has a per-pair form (`per_pair=True`) whose values the extraction
probe stores per example. The category rules (thresholds in `CategoryRules`) are written out
in `categorize` and in docs/EXTRACTION.md.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from finemem.metrics.registry import register_metric

CATEGORIES = ("verbatim", "idea", "paraphrase", "none")


def _pairs(generated: Sequence[str], reference: Sequence[str]) -> None:
    if len(generated) != len(reference):
        raise ValueError(f"got {len(generated)} generations for {len(reference)} references")


def _mean(name: str, vals: np.ndarray, per_pair: bool):
    if per_pair:
        return vals
    if not vals.size:
        warnings.warn(f"{name}: no pairs; returning nan", RuntimeWarning, stacklevel=3)
        return math.nan
    return float(vals.mean())


@register_metric("bleu", higher_is_better=True, more_memorized_when="higher",
                 inputs="text_pairs")
def bleu(generated: Sequence[str], reference: Sequence[str], *, per_pair: bool = False):
    """Sentence BLEU (sacrebleu, 0-100, exponential smoothing) of each generation against its
    reference; the mean over pairs (nan for none), or the per-pair array."""
    _pairs(generated, reference)
    if not len(generated):
        return _mean("bleu", np.zeros(0), per_pair)
    import sacrebleu

    vals = np.array([sacrebleu.sentence_bleu(g, [r]).score for g, r in zip(generated, reference)],
                    dtype=float)
    return vals if per_pair else (float(vals.mean()) if vals.size else math.nan)


@functools.lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer

    # Split on whitespace (no stemming): the built-in tasks and user data are not all English.
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=_WhitespaceTok())


class _WhitespaceTok:
    def tokenize(self, text: str) -> list[str]:
        return text.lower().split()


@register_metric("rouge_l", higher_is_better=True, more_memorized_when="higher",
                 inputs="text_pairs")
def rouge_l(generated: Sequence[str], reference: Sequence[str], *, per_pair: bool = False):
    """ROUGE-L F1 (rouge-score; lower-cased whitespace tokens): F = 2PR/(P+R) with
    P = LCS/len(gen), R = LCS/len(ref). Mean over pairs, or the per-pair array."""
    _pairs(generated, reference)
    sc = _rouge()
    vals = np.array([sc.score(r, g)["rougeL"].fmeasure for g, r in zip(generated, reference)],
                    dtype=float)
    return _mean("rouge_l", vals, per_pair)


@register_metric("embedding_cosine", higher_is_better=True, more_memorized_when="higher",
                 inputs="embedding_pairs")
def embedding_cosine(a, b, *, per_pair: bool = False):
    """cos(a_i, b_i) = a_i . b_i / (|a_i| |b_i|) for each row pair of two (n, d) arrays (0 for
    a zero row). Mean over rows, or the per-row array."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"embedding arrays differ in shape: {a.shape} vs {b.shape}")
    norm = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    vals = np.where(norm > 0, (a * b).sum(-1) / np.where(norm > 0, norm, 1.0), 0.0)
    return _mean("embedding_cosine", vals, per_pair)


@register_metric("memorization_ratio", higher_is_better=False, more_memorized_when="higher",
                 kind="rate", inputs="labels")
def memorization_ratio(labels: Sequence[str], *, category: str = "verbatim") -> float:
    """Share of generations labelled `category`: #{i: label_i = category} / n (nan for n = 0).
    category 'any' counts every label but 'none'."""
    if not len(labels):
        warnings.warn("memorization_ratio: no generations; returning nan", RuntimeWarning,
                      stacklevel=2)
        return math.nan
    hit = [(lab != "none") if category == "any" else (lab == category) for lab in labels]
    return float(np.mean(hit))


# ----------------------------------------------------------------- categories

@dataclass(frozen=True)
class CategoryRules:
    """Thresholds of `categorize` (docs/EXTRACTION.md explains each).

    verbatim_chars : a shared run of at least this many characters is verbatim (the paper: 50);
        a generation shorter than that is verbatim when one run covers all of it.
    min_chars : generations shorter than this (stripped) are 'none': too little to judge.
    idea_span_ratio : 'idea' when the aligned source span is at least this many times longer
        than the generation ...
    idea_similarity : ... and the generation's embedding is at least this close to that span.
    paraphrase_similarity : otherwise 'paraphrase' when the generation is at least this close to
        the aligned span of a candidate.
    min_alignment : candidates whose fuzzy alignment score (rapidfuzz partial ratio, 0-100) is
        below this are not considered for idea / paraphrase (they share too little text).
    max_spans : of those, the best-aligned this many are compared by meaning.
    """
    verbatim_chars: int = 50
    min_chars: int = 10
    idea_span_ratio: float = 2.0
    idea_similarity: float = 0.6
    paraphrase_similarity: float = 0.75
    min_alignment: float = 40.0
    max_spans: int = 3


def shares_run(a: str, b: str, k: int) -> bool:
    """Whether some run of k characters of `a` occurs in `b` (k <= 0: True)."""
    if k <= 0:
        return True
    return any(a[i:i + k] in b for i in range(len(a) - k + 1))


def longest_shared_run(a: str, b: str) -> int:
    """Length in characters of the longest common substring of `a` and `b` (a binary search
    on the length with `shares_run`: a shared run of k characters contains one of k - 1)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if shares_run(a, b, mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def aligned_span(generated: str, candidate: str) -> tuple[str, float]:
    """The stretch of `candidate` that `generated` aligns to, and the alignment score (0-100):
    rapidfuzz's best partial alignment when the generation is the shorter text, else the
    stretch from the first to the last character an optimal alignment matches."""
    from rapidfuzz import fuzz
    from rapidfuzz.distance import Levenshtein

    if len(generated) <= len(candidate):
        al = fuzz.partial_ratio_alignment(generated, candidate)
        start, end, score = al.dest_start, al.dest_end, al.score
        # A summary-like generation aligns to a longer stretch than its own length: widen the
        # window to the first and last characters the full alignment matches.
        eq = [op for op in Levenshtein.opcodes(generated, candidate) if op.tag == "equal"
              and op.src_end - op.src_start >= 3]
        if eq:
            start, end = min(start, eq[0].dest_start), max(end, eq[-1].dest_end)
        return candidate[start:end], float(score)
    return candidate, float(fuzz.ratio(generated, candidate))


def semantic_spans(generated: str, candidates: Sequence[str],
                   rules: CategoryRules = CategoryRules()) -> list[str]:
    """The aligned spans the idea / paraphrase rules compare with `generated` (stripped): of
    each candidate whose alignment score is >= min_alignment, best-aligned first, at most
    max_spans."""
    scored = [aligned_span(generated, c) for c in candidates]
    scored = [(score, i, s) for i, (s, score) in enumerate(scored)
              if score >= rules.min_alignment and s.strip()]
    return [s for _, _, s in sorted(scored, key=lambda x: (-x[0], x[1]))[:rules.max_spans]]


def categorize(generated: str, candidates: Sequence[str], *,
               similarity: Callable[[str, str], float],
               rules: CategoryRules = CategoryRules()) -> str:
    """The memorization category of one generation, given the training texts it may come from
    (e.g. BM25's top 10) and a semantic similarity in [-1, 1] (MiniLM cosine in the probe).

    Rules, first match wins:
      1. 'none' if the generation has fewer than `min_chars` characters (stripped);
      2. 'verbatim' if some candidate shares a run of >= min(verbatim_chars, len(generation))
         characters with it (longest common substring);
      3. 'idea' if for one of the best-aligned candidates (`semantic_spans`: alignment score
         >= min_alignment, at most max_spans) the aligned span is >= idea_span_ratio x longer
         than the generation and similarity >= idea_similarity: a summary-like match, shorter
         text keeping the meaning;
      4. 'paraphrase' if for one of them the similarity of the generation to its aligned span
         is >= paraphrase_similarity;
      5. 'none'.
    """
    g = generated.strip()
    if len(g) < rules.min_chars or not candidates:
        return "none"
    need = min(rules.verbatim_chars, len(g))
    if any(shares_run(g, c, need) for c in candidates):
        return "verbatim"
    spans = semantic_spans(g, candidates, rules)
    for s in spans:
        if len(s) >= rules.idea_span_ratio * len(g) and similarity(g, s) >= rules.idea_similarity:
            return "idea"
    for s in spans:
        if similarity(g, s) >= rules.paraphrase_similarity:
            return "paraphrase"
    return "none"


# ----------------------------------------------------------------- helpers for the probe

def length_bin(n_tokens: int, edges: Sequence[int]) -> str:
    """The bin label of a length: edges (a, b, c) give bins '<a', 'a-(b-1)', ..., '>=c'."""
    edges = sorted(edges)
    if n_tokens < edges[0]:
        return f"<{edges[0]}"
    for lo, hi in zip(edges, edges[1:]):
        if lo <= n_tokens < hi:
            return f"{lo}-{hi - 1}"
    return f">={edges[-1]}"


def split_prefix_suffix(context: list[int], target: list[int], prefix: int, suffix: int
                        ) -> tuple[list[int], list[int]] | None:
    """(prefix tokens, true suffix) of a text as trained (context = what the model reads
    without loss, target = what it learned to write): the prefix is the context plus the first
    `prefix` target tokens, the suffix the next `suffix` target tokens. None when the target
    has fewer than prefix + suffix tokens."""
    if len(target) < prefix + suffix:
        return None
    return context + target[:prefix], target[prefix:prefix + suffix]


def rank_spearman(x, y) -> float:
    """Spearman's rank correlation rho = Pearson correlation of the ranks (ties averaged);
    nan when either input is constant or has fewer than 3 values."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(spearmanr(x, y).statistic)


@register_metric("excess_over_nonmembers", higher_is_better=False, more_memorized_when="higher",
                 inputs="flag_sets")
def excess_over_nonmembers(member_flags, nonmember_flags) -> float:
    """How much more often members show an outcome than non-members: mean(member_flags) -
    mean(nonmember_flags). On procedural text a template alone reproduces text; only this
    excess says the model memorized *these* examples. nan when either set is empty."""
    a = np.asarray(member_flags, dtype=float)
    b = np.asarray(nonmember_flags, dtype=float)
    if not a.size or not b.size:
        warnings.warn("excess_over_nonmembers: an empty set; returning nan", RuntimeWarning,
                      stacklevel=2)
        return math.nan
    return float(a.mean() - b.mean())


def bootstrap_diff_ci(a, b, *, n_boot: int = 1000, conf: float = 0.95, seed: int = 0
                      ) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) - mean(b), resampling each group on its own
    (two independent samples)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not a.size or not b.size:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    da = a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(1)
    db = b[rng.integers(0, b.size, size=(n_boot, b.size))].mean(1)
    lo, hi = np.quantile(da - db, [(1 - conf) / 2, (1 + conf) / 2])
    return float(lo), float(hi)


def spearman_ci(x, y, *, n_boot: int = 1000, conf: float = 0.95, seed: int = 0
                ) -> tuple[float, float, float]:
    """(rho, lo, hi): Spearman's rho with a percentile bootstrap interval over pairs
    (resamples where either side is constant are dropped); nans when rho is undefined."""
    from scipy.stats import rankdata

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rho = rank_spearman(x, y)
    if math.isnan(rho):
        return rho, math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))
    rx, ry = rankdata(x[idx], axis=1), rankdata(y[idx], axis=1)  # ties averaged, per resample
    rx -= rx.mean(1, keepdims=True)
    ry -= ry.mean(1, keepdims=True)
    den = np.sqrt((rx ** 2).sum(1) * (ry ** 2).sum(1))
    ok = den > 0
    if not ok.any():
        return rho, math.nan, math.nan
    boots = (rx * ry).sum(1)[ok] / den[ok]
    lo, hi = np.quantile(boots, [(1 - conf) / 2, (1 + conf) / 2])
    return rho, float(lo), float(hi)


@register_metric("sampled_extraction_rate", higher_is_better=False, more_memorized_when="higher",
                 kind="rate", inputs="correct_flags")
def sampled_extraction_rate(sample_flags) -> float:
    """Share of examples for which at least one of their n sampled continuations reproduces
    the true suffix exactly: (1/N) sum_i max_j flag_ij (flags: one bool array of n samples per
    example). nan for no examples."""
    arrs = [np.asarray(f, dtype=bool) for f in sample_flags]
    if not arrs:
        warnings.warn("sampled_extraction_rate: no examples; returning nan", RuntimeWarning,
                      stacklevel=2)
        return math.nan
    return float(np.mean([a.any() for a in arrs]))
