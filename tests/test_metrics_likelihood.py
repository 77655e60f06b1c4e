import math
import zlib

import numpy as np
import pytest

from finemem.metrics.likelihood import (exact_greedy_extractable, extraction_strength,
                                        leading_match_length, mean_nll, perplexity, sum_nll,
                                        token_accuracy, zlib_length)

# Two examples: p = (0.5, 0.25) and p = (0.1,). NLLs: ln2 + ln4 = 3 ln2, and ln10.
LP = [np.log([0.5, 0.25]), np.log([0.1])]


def test_sum_and_mean_nll_by_hand():
    assert sum_nll(LP) == pytest.approx((3 * math.log(2) + math.log(10)) / 2)
    assert sum_nll(LP, per_example=True) == pytest.approx([3 * math.log(2), math.log(10)])
    # Pooled over 3 tokens, not the mean of per-example means.
    assert mean_nll(LP) == pytest.approx((3 * math.log(2) + math.log(10)) / 3)
    assert mean_nll(LP, per_example=True) == pytest.approx([1.5 * math.log(2), math.log(10)])


def test_perplexity_pooled_and_per_example():
    # exp(mean nll) = (2 * 4 * 10) ** (1/3)
    assert perplexity(LP) == pytest.approx(80 ** (1 / 3))
    assert perplexity(LP, per_example=True) == pytest.approx([math.sqrt(8), 10.0])
    assert perplexity([np.zeros(5)]) == 1.0
    # Uniform over a vocabulary of 50 -> perplexity 50.
    assert perplexity([np.full(7, -math.log(50))]) == pytest.approx(50.0)


def test_logprob_validation():
    with pytest.raises(ValueError, match="natural-log probabilities"):
        perplexity([np.array([0.5, 0.2])])
    with pytest.raises(ValueError, match="one 1-D array"):
        perplexity(np.log([0.5, 0.5]))
    with pytest.raises(ValueError, match="shape"):
        perplexity([np.zeros((2, 2))])


def test_empty_examples_are_dropped_with_warning():
    with pytest.warns(RuntimeWarning, match="dropped 1"):
        assert perplexity([np.log([0.5]), np.array([])]) == pytest.approx(2.0)
    with pytest.warns(RuntimeWarning, match="returning nan"):
        assert math.isnan(perplexity([]))


FLAGS = [[1, 0, 1, 1], [1, 1, 1], [0, 0]]


def test_token_accuracy_pooled():
    assert token_accuracy(FLAGS) == pytest.approx(6 / 9)
    assert token_accuracy(FLAGS, per_example=True) == pytest.approx([0.75, 1.0, 0.0])


def test_exact_greedy_extractable():
    assert exact_greedy_extractable(FLAGS) == pytest.approx(1 / 3)
    assert list(exact_greedy_extractable(FLAGS, per_example=True)) == [False, True, False]


def test_leading_match_length():
    assert list(leading_match_length(FLAGS, per_example=True)) == [1, 3, 0]
    assert leading_match_length(FLAGS) == pytest.approx(4 / 3)


@pytest.mark.parametrize("flags, expected", [
    ([0, 1, 1], 2 / 3),     # from position 1 on every argmax matches
    ([1, 1, 0], 0.0),       # the last token is wrong: no prefix extracts the rest
    ([1, 1, 1], 1.0),       # extractable from the prompt alone
    ([1, 0, 1, 1, 1], 3 / 5),
    ([0], 0.0),
])
def test_extraction_strength_hand_values(flags, expected):
    assert extraction_strength([flags]) == pytest.approx(expected)


def test_extraction_strength_mean_over_examples():
    # per example: 2/4, 1, 0
    assert extraction_strength(FLAGS) == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_zlib_length():
    assert zlib_length("abc") == len(zlib.compress(b"abc"))
    assert zlib_length("é") == len(zlib.compress("é".encode("utf-8")))
    # Repetitive text compresses far below its length.
    assert zlib_length("ab" * 500) < 50
