"""Extraction metrics and the category rules against hand-made inputs (no model)."""

import math

import numpy as np
import pytest

from finemem.metrics import extraction as ex
from finemem.metrics.attention import spearman_rho


def word_sim(a: str, b: str) -> float:
    """A stand-in for the sentence encoder: Jaccard overlap of lower-cased word sets."""
    x, y = set(a.lower().split()), set(b.lower().split())
    return len(x & y) / len(x | y) if x | y else 0.0


SOURCE = ("The northern owl nests in tall pines near the river and hunts small voles at dusk "
          "during the long cold winter months of the year.")


def test_verbatim_needs_a_long_shared_run():
    gen = "nests in tall pines near the river and hunts small voles at dusk"   # 64 chars
    assert ex.longest_shared_run(gen, SOURCE) == len(gen)
    assert ex.categorize(gen, [SOURCE], similarity=word_sim) == "verbatim"
    # 49 shared characters are not enough at the default 50 ...
    short = "XX" + SOURCE[10:59] + "YY" + " and something else entirely"
    assert ex.longest_shared_run(short, SOURCE) == 49
    assert ex.categorize(short, [SOURCE], similarity=word_sim,
                         rules=ex.CategoryRules(paraphrase_similarity=1.1,
                                                idea_similarity=1.1)) == "none"
    # ... and a generation shorter than 50 characters is verbatim when all of it is shared.
    assert ex.categorize("hunts small voles at dusk", [SOURCE], similarity=word_sim) == "verbatim"


def test_idea_is_a_short_text_keeping_the_meaning_of_a_longer_span():
    gen = "The owl nests in pines and hunts voles in winter"
    rules = ex.CategoryRules(idea_span_ratio=2.0, idea_similarity=0.3, min_alignment=30)
    span, score = ex.aligned_span(gen, SOURCE)
    assert len(span) >= 2 * len(gen) and score >= 30
    assert ex.categorize(gen, [SOURCE], similarity=word_sim, rules=rules) == "idea"


def test_paraphrase_is_a_similar_text_of_about_the_same_length():
    src = "the river owl hunts voles at night"
    gen = "at night the owl of the river hunts voles"
    rules = ex.CategoryRules(paraphrase_similarity=0.7, min_alignment=30)
    assert ex.categorize(gen, [src], similarity=word_sim, rules=rules) == "paraphrase"
    # With a similarity that says "unrelated", the same pair is 'none'.
    assert ex.categorize(gen, [src], similarity=lambda a, b: 0.0, rules=rules) == "none"


def test_none_for_short_or_unrelated_generations():
    assert ex.categorize("owl", [SOURCE], similarity=word_sim) == "none"    # < min_chars
    assert ex.categorize("completely different words here", [SOURCE],
                         similarity=word_sim) == "none"
    assert ex.categorize("anything long enough to judge", [], similarity=word_sim) == "none"


def test_verbatim_wins_over_the_other_labels():
    gen = SOURCE[:60]
    assert ex.categorize(gen, ["unrelated text about cats", SOURCE],
                         similarity=lambda a, b: 1.0) == "verbatim"


def test_text_pair_scores_by_hand():
    assert ex.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100)
    assert ex.bleu(["a b c d"], ["w x y z"]) < 10
    # ROUGE-L: LCS("a b c d", "a c d e") = 3 -> P = 3/4, R = 3/4, F = 0.75
    assert ex.rouge_l(["a b c d"], ["a c d e"]) == pytest.approx(0.75)
    per = ex.rouge_l(["a b", "x y"], ["a b", "a b"], per_pair=True)
    assert per.tolist() == [1.0, 0.0]
    a = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    b = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    assert ex.embedding_cosine(a, b, per_pair=True) == pytest.approx([1 / math.sqrt(2), 1, 0])


def test_ratios_excess_and_intervals():
    labels = ["verbatim", "none", "idea", "verbatim"]
    assert ex.memorization_ratio(labels, category="verbatim") == 0.5
    assert ex.memorization_ratio(labels, category="any") == 0.75
    assert ex.excess_over_nonmembers([1, 1, 0, 1], [0, 1, 0, 0]) == pytest.approx(0.5)
    lo, hi = ex.bootstrap_diff_ci([1] * 40, [0] * 40)
    assert lo == hi == 1.0
    lo, hi = ex.bootstrap_diff_ci([1, 0] * 20, [1, 0] * 20)
    assert lo < 0 < hi


def test_length_bins_and_prefix_suffix_split():
    edges = [64, 128, 256]
    assert [ex.length_bin(n, edges) for n in (10, 64, 127, 128, 300)] == [
        "<64", "64-127", "64-127", "128-255", ">=256"]
    ctx, tgt = [1, 2], list(range(10, 20))
    assert ex.split_prefix_suffix(ctx, tgt, 3, 4) == ([1, 2, 10, 11, 12], [13, 14, 15, 16])
    assert ex.split_prefix_suffix(ctx, tgt, 0, 10) == ([1, 2], tgt)   # P = 0: prompt alone
    assert ex.split_prefix_suffix(ctx, tgt, 5, 6) is None            # too short


def test_spearman_and_its_interval():
    x = [1, 2, 3, 4, 5, 6, 7, 8]
    assert spearman_rho(x, [10, 20, 30, 40, 50, 60, 70, 80]) == pytest.approx(1.0)
    assert spearman_rho(x, [8, 7, 6, 5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks of y: 1 3 2 4 -> d = 0,-1,1,0 -> rho = 1 - 6*2/(4*15) = 0.8
    assert spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert math.isnan(spearman_rho([1, 1, 1], [1, 2, 3]))
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    rho, lo, hi = ex.spearman_ci(a, a + rng.normal(scale=0.1, size=200))
    assert lo <= rho <= hi and lo > 0.9
    rho, lo, hi = ex.spearman_ci(a, rng.normal(size=200))
    assert lo < 0 < hi


def test_sampled_extraction_rate_by_hand():
    # example 1: one of 3 samples exact; example 2: none; example 3: all -> 2/3
    flags = [[False, True, False], [False, False, False], [True, True, True]]
    assert ex.sampled_extraction_rate(flags) == pytest.approx(2 / 3)
