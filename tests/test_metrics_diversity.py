import math
from math import comb

import numpy as np
import pytest

from finemem.metrics.diversity import (distinct_answers, distinct_fraction, distinct_n, embed_texts,
                                       embedding_dispersion, entropy_from_probs,
                                       load_sentence_encoder, mean_pass_at_k, pass_at_k,
                                       self_bleu)


@pytest.mark.parametrize("n, c, k", [(5, 2, 2), (10, 3, 1), (10, 3, 5), (20, 0, 4), (6, 6, 3),
                                     (100, 7, 10)])
def test_pass_at_k_matches_binomial_form(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


def test_pass_at_k_hand_values_and_stability():
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)       # 1 - 3/10
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)      # pass@1 = c/n
    assert pass_at_k(4, 2, 3) == 1.0                      # n - c < k: any 3 contain a correct
    # Large n: the binomial form overflows floats, the product form does not.
    assert 0.0 < pass_at_k(2000, 1, 1000) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least k samples"):
        pass_at_k(3, 1, 5)


def test_mean_pass_at_k():
    assert mean_pass_at_k([5, 5, 4], [2, 0, 2], k=2) == pytest.approx((0.7 + 0 + 1 - 1 / 6) / 3)


def test_distinct_fraction_hand_values():
    assert distinct_fraction(["x", "x", "y", "z"]) == pytest.approx(3 / 4)
    # first lines: "A." twice (the blank first line of the third is skipped), "B." once
    samples = ["A.\n1 + 1 = 2.", "A.\n2 + 2 = 4.", "\n A.\n3", "B.\n5"]
    assert distinct_fraction(samples) == pytest.approx(1.0)
    assert distinct_fraction(samples, first_line=True) == pytest.approx(2 / 4)
    with pytest.warns(RuntimeWarning):
        assert math.isnan(distinct_fraction([]))


def test_distinct_n_hand_values():
    texts = ["the cat sat", "the cat ran"]
    assert distinct_n(texts, n=1) == pytest.approx(4 / 6)   # the, cat, sat, ran
    assert distinct_n(texts, n=2) == pytest.approx(3 / 4)   # the-cat twice
    assert distinct_n(["a b", "c"], n=2) == pytest.approx(1.0)   # no n-gram across texts
    with pytest.warns(RuntimeWarning, match="no 3-grams"):
        assert math.isnan(distinct_n(["a b"], n=3))


def test_self_bleu_excludes_self():
    texts = ["a b c d", "a b c e", "p q r s"]
    # Hand: "a b c d" vs refs {"a b c e", "p q r s"}: precisions 3/4, 2/3, 1/2 and 0/1, which
    # sacrebleu's exp smoothing turns into 1/2; BP = 1 -> (3/4*2/3*1/2*1/2)^(1/4) = 0.5946.
    # Same for "a b c e"; "p q r s" shares no unigram -> 0.
    expected = (2 * 0.125 ** 0.25 + 0.0) / 3
    assert self_bleu(texts) == pytest.approx(expected, abs=1e-6)
    # Including the sample among its own references would give BLEU 1 for every sample.
    import sacrebleu
    with_self = np.mean([sacrebleu.sentence_bleu(t, texts).score for t in texts]) / 100
    assert with_self == pytest.approx(1.0)
    assert self_bleu(texts) < with_self - 0.5


def test_self_bleu_equals_sentence_bleu_per_sample_exactly():
    """One scorer for all samples (its token cache shared) gives sacrebleu.sentence_bleu's
    numbers bit for bit."""
    import sacrebleu

    texts = ["Tom has 3 apples. He buys 4 more: 3 + 4 = 7.", "Tom has 3 apples; 3 + 4 = 7.",
             "Ann had 12 pens, gave 5 away: 12 - 5 = 7.", "3 + 4 = 7", "Tom has 3 apples."]
    by_call = [sacrebleu.sentence_bleu(t, texts[:i] + texts[i + 1:]).score
               for i, t in enumerate(texts)]
    assert self_bleu(texts) == float(np.mean(by_call)) / 100.0


def test_self_bleu_identical_and_degenerate():
    assert self_bleu(["same words here"] * 3) == pytest.approx(1.0)
    with pytest.warns(RuntimeWarning, match="at least 2"):
        assert math.isnan(self_bleu(["only one"]))


def test_distinct_answers():
    assert distinct_answers(["72", "72.0", "1,000", "1000", None, "5"]) == 3
    assert distinct_answers([]) == 0


def test_embedding_dispersion_hand_values():
    # Pairs: (x, y) 1, (x, x) 0, (y, x) 1 -> 2/3; scale does not matter.
    e = np.array([[2.0, 0.0], [0.0, 1.0], [5.0, 0.0]])
    assert embedding_dispersion(e) == pytest.approx(2 / 3)
    assert embedding_dispersion(np.array([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(2.0)
    with pytest.warns(RuntimeWarning, match="zero embedding"):
        assert math.isnan(embedding_dispersion(np.array([[0.0, 0.0], [1.0, 0.0]])))
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        embedding_dispersion(np.zeros(3))


def test_entropy_from_probs():
    assert entropy_from_probs([1.0, 0.0]) == 0.0
    assert entropy_from_probs([0.25] * 4) == pytest.approx(math.log(4))
    assert entropy_from_probs([0.25] * 4, base=2) == pytest.approx(2.0)
    h = entropy_from_probs(np.array([[0.5, 0.5], [1.0, 0.0]]))
    assert h == pytest.approx([math.log(2), 0.0])
    with pytest.raises(ValueError, match="softmax"):
        entropy_from_probs([2.0, -1.0])


@pytest.mark.integration
def test_sentence_encoder_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = load_sentence_encoder()
    assert load_sentence_encoder() is enc            # cached
    e = embed_texts(["The cat sits on the mat.", "A cat is sitting on a mat.",
                     "Quarterly revenue fell by ten percent."])
    assert e.shape == (3, 384)
    assert np.linalg.norm(e, axis=1) == pytest.approx(np.ones(3), abs=1e-5)
    similar, unrelated = float(e[0] @ e[1]), float(e[0] @ e[2])
    assert similar > 0.8 > 0.3 > unrelated
    assert embed_texts([]).shape == (0, 384)
    # Near-paraphrases disperse less than unrelated sentences.
    assert embedding_dispersion(e[:2]) < embedding_dispersion(e[[0, 2]])
