"""Property tests over every registered metric (in the manner of scikit-learn's test_common)."""

import math
import numbers
import warnings

import numpy as np
import pytest

from finemem.errors import UserError
from finemem.metrics.registry import INPUT_KINDS, METRICS, get_metric, metric_names, register_metric

RNG = np.random.default_rng(0)
WORDS = "the cat dog sat ran on a mat rug big small red".split()


def _sample(kind: str, rng) -> tuple:
    """Random valid data arguments for an input kind, as a tuple of aligned per-example lists."""
    n = 7
    if kind == "token_logprobs":
        return ([np.log(rng.uniform(0.05, 1.0, size=rng.integers(1, 6))) for _ in range(n)],)
    if kind == "correct_flags":
        return ([rng.random(rng.integers(1, 6)) < 0.7 for _ in range(n)],)
    if kind == "texts":
        return ([" ".join(rng.choice(WORDS, size=rng.integers(3, 8))) for _ in range(n)],)
    if kind == "answers":
        return ([str(x) for x in rng.integers(0, 4, size=n)] + [None],)
    if kind == "pred_ref":
        return ([str(x) for x in rng.integers(0, 3, size=n)],
                [str(x) for x in rng.integers(0, 3, size=n)])
    if kind == "embeddings":
        return (list(rng.normal(size=(n, 5))),)
    if kind == "confidence_correct":
        return (list(rng.uniform(0, 1, size=n)), list(rng.integers(0, 2, size=n)))
    if kind == "pass_counts":
        ns = rng.integers(3, 9, size=n)
        return (list(ns), [int(rng.integers(0, m + 1)) for m in ns])
    if kind == "values":
        return (list(rng.uniform(0, 3, size=n)),)
    if kind == "flag_sets":
        return (list(rng.random(n) < 0.8), list(rng.random(n) < 0.5))
    if kind == "text_pairs":
        return tuple([" ".join(rng.choice(WORDS, size=rng.integers(3, 8))) for _ in range(n)]
                     for _ in range(2))
    if kind == "text_sets":
        return tuple([" ".join(rng.choice(WORDS, size=rng.integers(3, 8))) for _ in range(n)]
                     for _ in range(2))
    if kind == "embedding_pairs":
        return (list(rng.normal(size=(n, 5))), list(rng.normal(size=(n, 5))))
    if kind == "score_sets":
        return (list(rng.normal(1.0, 1.0, size=n)), list(rng.normal(0.0, 1.0, size=n)))
    if kind == "value_pairs":
        return (list(rng.normal(size=n)), list(rng.normal(size=n)))
    if kind == "labels":
        return (list(rng.choice(["verbatim", "idea", "paraphrase", "none"], size=n)),)
    raise AssertionError(f"no sample generator for input kind {kind!r}; add one")


def _call(info, args):
    if info.inputs == "embeddings":
        args = (np.asarray(args[0]),)
    if info.inputs == "embedding_pairs":
        args = tuple(np.asarray(a) for a in args)
    return info.fn(*args)


DEGENERATE = {  # input kind -> data arguments with nothing to measure
    "token_logprobs": ([],), "correct_flags": ([],), "texts": ([],), "pred_ref": ([], []),
    "embeddings": (np.zeros((0, 4)),), "confidence_correct": ([], []), "pass_counts": ([], []),
    "values": ([],), "flag_sets": ([], []), "text_pairs": ([], []), "text_sets": ([], []),
    "embedding_pairs": (np.zeros((0, 4)), np.zeros((0, 4))), "labels": ([],),
    "score_sets": ([], []), "value_pairs": ([], []),
}
WELL_DEFINED_WHEN_EMPTY = {"distinct_answers": 0}   # a count of nothing is 0, not unknown

ALL = metric_names()


def test_registry_is_populated_and_kinds_are_covered():
    assert {"perplexity", "extraction_strength", "self_bleu", "expected_calibration_error",
            "answer_accuracy", "mean_pass_at_k"} <= set(ALL)
    for name in ALL:
        _sample(METRICS[name].inputs, RNG)   # every input kind has a generator


@pytest.mark.parametrize("name", ALL)
def test_metric_metadata(name):
    info = get_metric(name)
    assert info.inputs in INPUT_KINDS
    assert info.more_memorized_when in ("higher", "lower", None)
    assert info.doc, f"{name} needs a docstring"
    if name.endswith("_score"):
        assert info.higher_is_better
    if name.endswith(("_loss", "_error")):
        assert not info.higher_is_better


@pytest.mark.parametrize("name", ALL)
def test_returns_a_number(name):
    info = get_metric(name)
    for seed in range(3):
        v = _call(info, _sample(info.inputs, np.random.default_rng(seed)))
        assert isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
        assert math.isfinite(v)
        if info.kind == "rate":
            assert 0.0 <= v <= 1.0


@pytest.mark.parametrize("name", ALL)
def test_invariant_to_example_order(name):
    info = get_metric(name)
    rng = np.random.default_rng(1)
    args = _sample(info.inputs, rng)
    perm = rng.permutation(len(args[0]))
    shuffled = tuple([a[i] for i in perm] for a in args)   # aligned arguments move together
    assert _call(info, shuffled) == pytest.approx(_call(info, args), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_degenerate_input_warns_and_returns_nan(name):
    info = get_metric(name)
    if name in WELL_DEFINED_WHEN_EMPTY:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert _call(info, ([],)) == WELL_DEFINED_WHEN_EMPTY[name]
        return
    with pytest.warns(RuntimeWarning):
        v = _call(info, DEGENERATE[info.inputs])
    assert isinstance(v, float) and math.isnan(v)


def test_unknown_metric_suggests_the_fix():
    with pytest.raises(UserError, match="Did you mean: perplexity?") as e:
        get_metric("perplexty")
    assert "Available:" in str(e.value)
    with pytest.raises(UserError, match="Unknown metric 'zzzz'\\. Available"):
        get_metric("zzzz")


def test_register_refuses_contradicting_suffix_and_bad_metadata():
    with pytest.raises(ValueError, match="higher-better"):
        register_metric("foo_score", higher_is_better=False, more_memorized_when=None,
                        inputs="texts")
    with pytest.raises(ValueError, match="lower-better"):
        register_metric("foo_loss", higher_is_better=True, more_memorized_when=None,
                        inputs="texts")
    with pytest.raises(ValueError, match="more_memorized_when"):
        register_metric("foo", higher_is_better=True, more_memorized_when="up", inputs="texts")
    with pytest.raises(ValueError, match="inputs"):
        register_metric("foo", higher_is_better=True, more_memorized_when=None, inputs="x")
    assert "foo_score" not in METRICS and "foo" not in METRICS
