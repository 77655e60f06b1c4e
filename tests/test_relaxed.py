"""The relaxed (embedding-similarity) memorization metric: hand-computed cosines on fixed
embeddings, the threshold curve, the relative reduction and its paired interval, the probe's
config refusals. The probe on a real run is checked in tests/test_compare.py."""

import math

import numpy as np
import pytest

from finemem.metrics.extraction import embedding_cosine
from finemem.metrics.relaxed import (DEFAULT_THRESHOLDS, check_threshold, paired_reduction_ci,
                                     relative_reduction, relaxed_memorization_rate,
                                     threshold_curve)


def test_rate_against_hand_computed_cosines():
    # generation / true-suffix embeddings whose cosines are worked out by hand
    gen = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [3.0, 4.0]])
    ref = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [4.0, 3.0]])
    cos = embedding_cosine(gen, ref, per_pair=True)
    assert cos == pytest.approx([1.0, 1 / math.sqrt(2), 0.0, 24 / 25])
    assert relaxed_memorization_rate(cos, threshold=0.95) == 0.5    # 1.0 and 0.96
    assert relaxed_memorization_rate(cos, threshold=0.7) == 0.75    # + 0.707
    assert relaxed_memorization_rate(cos, threshold=0.0) == 1.0
    assert relaxed_memorization_rate(cos, threshold=1.0) == 0.25    # the identical pair only
    # float32 embeddings of identical texts give 0.9999999: still memorized at threshold 1
    assert relaxed_memorization_rate([1 - 1e-7], threshold=1.0) == 1.0


def test_threshold_curve_is_monotone():
    rng = np.random.default_rng(0)
    for _ in range(20):
        cos = rng.uniform(-1, 1, size=rng.integers(1, 50))
        curve = threshold_curve(cos, DEFAULT_THRESHOLDS)
        assert curve.shape == (11,) and np.all(np.diff(curve) <= 0)
        assert np.all((curve >= 0) & (curve <= 1))
    assert DEFAULT_THRESHOLDS[0] == 0.5 and DEFAULT_THRESHOLDS[-1] == 1.0
    assert np.isnan(threshold_curve([], [0.5, 1.0])).all()


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_threshold_outside_unit_interval_is_refused(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_threshold(bad)
    with pytest.raises(ValueError):
        relaxed_memorization_rate([0.5], threshold=bad)


def test_relative_reduction_and_paired_interval():
    full = np.array([1.0] * 40 + [0.0] * 10)        # 0.8 memorized
    lora = np.array([1.0] * 20 + [0.0] * 30)        # 0.4 memorized: 50% lower
    assert relative_reduction(full, lora) == pytest.approx(0.5)
    value, lo, hi = paired_reduction_ci(full, lora, n_boot=2000)
    assert value == pytest.approx(0.5) and lo < 0.5 < hi and lo > 0.25 and hi < 0.75
    # no difference: the interval covers 0; more memorization: negative
    v, lo, hi = paired_reduction_ci(full, full)
    assert v == 0 and lo == 0 == hi
    assert relative_reduction(lora, full) == pytest.approx(-1.0)
    # a reference that memorizes nothing: undefined
    assert math.isnan(relative_reduction(np.zeros(5), np.ones(5)))
    assert all(math.isnan(x) for x in paired_reduction_ci(np.zeros(5), np.ones(5)))
    with pytest.raises(ValueError, match="shape"):
        paired_reduction_ci(np.ones(3), np.ones(4))


def test_probe_config_refuses_thresholds_outside_unit_interval(tmp_path):
    from finemem.config import load_config
    from finemem.errors import UserError

    cfg = tmp_path / "run.yaml"
    cfg.write_text("run_dir: x\nmodel: builtin:test\ndata:\n  train: {source: builtin:qa}\n"
                   "audit:\n  relaxed: {threshold: 1.2}\n")
    with pytest.raises(UserError) as e:
        load_config(cfg)
    assert "relaxed" in str(e.value) and "threshold" in str(e.value)
    assert "\n" not in str(e.value)
    cfg.write_text("run_dir: x\nmodel: builtin:test\ndata:\n  train: {source: builtin:qa}\n"
                   "audit:\n  relaxed: {thresholds: [0.5, -0.2]}\n")
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        load_config(cfg)
    cfg.write_text("run_dir: x\nmodel: builtin:test\ndata:\n  train: {source: builtin:qa}\n"
                   "audit:\n  relaxed: {threshold: 0.9, thresholds: [0.6, 0.5, 0.6]}\n")
    sec = load_config(cfg).audit.section("relaxed")
    assert sec.thresholds == [0.5, 0.6] and sec.all_thresholds() == [0.5, 0.6, 0.9]


def test_probe_is_registered_after_extraction():
    from finemem.audit.probes import get_probe, resolve_probes

    assert resolve_probes(["relaxed"]) == ["extraction", "relaxed"]
    assert not get_probe("relaxed").default
