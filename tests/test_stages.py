import numpy as np
import pytest

from finemem.analysis.stages import LABELS, StageRule, label_stages
from finemem.errors import UserError

U, H, O, F = "underfit", "healthy", "over-memorized", "overfit"


def test_clean_three_stage_curve():
    acc = [0.10, 0.40, 0.70, 0.80, 0.82, 0.81, 0.80, 0.81]
    ppl = [5.0, 3.0, 2.0, 1.8, 1.9, 2.5, 3.2, 4.0]
    # best .82, underfit below .41 (idx 0, 1); running min 1.8 from idx 3;
    # ratios 1.9/1.8 = 1.06 (healthy), 2.5/1.8 = 1.39 >= 1.3 with acc within .05 -> over-memorized
    res = label_stages(acc, ppl)
    assert res.labels == [U, U, H, H, H, O, O, O]
    assert res.best_acc == pytest.approx(0.82) and res.underfit_threshold == pytest.approx(0.41)
    assert res.first(O) == 5 and res.indices(U) == [0, 1]
    r5 = res.rows[5]
    assert r5.ppl_min_so_far == 1.8 and r5.ppl_ratio == pytest.approx(2.5 / 1.8)
    assert "1.39x the running minimum 1.8" in r5.reason and "within 0.05 of the best 0.820" \
        in r5.reason


def test_classic_overfit_curve():
    acc = [0.2, 0.6, 0.8, 0.7, 0.6]
    ppl = [4.0, 2.0, 1.8, 2.5, 3.5]
    # idx 3: PPL 1.39x and accuracy .70 < .80 - .05 -> overfit
    res = label_stages(acc, ppl)
    assert res.labels == [U, H, H, F, F]
    assert "fell more than 0.05 below the best 0.800" in res.rows[3].reason


def test_sample_size_decides_whether_accuracy_fell():
    acc = [0.2, 0.6, 0.8, 0.7]
    ppl = [4.0, 2.0, 1.8, 2.5]
    # 35/50: Wilson upper bound 0.81 >= 0.75, the drop is within noise -> over-memorized.
    small = label_stages(acc, ppl, acc_n=[50] * 4)
    assert small.labels[3] == O
    assert small.rows[3].acc_upper == pytest.approx(0.8091, abs=1e-3)
    # 700/1000: upper bound 0.728 < 0.75, a real fall -> overfit.
    assert label_stages(acc, ppl, acc_n=[1000] * 4).labels[3] == F


def test_flat_curves():
    assert label_stages([0.5] * 5, [2.0] * 5).labels == [H] * 5
    never = label_stages([0.0] * 3, [9.0, 8.0, 8.5])
    assert never.labels == [U] * 3 and "never learned" in never.rows[0].reason


def test_single_noisy_spike():
    acc = [0.5, 0.80, 0.80, 0.81, 0.80, 0.80]
    ppl = [3.0, 2.0, 2.0, 2.8, 2.05, 2.0]
    assert label_stages(acc, ppl).labels == [H, H, H, O, H, H]
    smooth = label_stages(acc, ppl, rule=StageRule(min_consecutive=2))
    assert smooth.labels == [H] * 6
    assert "treated as noise" in smooth.rows[3].reason
    # A sustained rise survives smoothing, whole run included.
    ppl2 = [3.0, 2.0, 2.0, 2.8, 2.9, 3.0]
    assert label_stages(acc, ppl2, rule=StageRule(min_consecutive=2)).labels == \
        [H, H, H, O, O, O]


def test_noisy_three_stage_curve_keeps_its_labels():
    # The clean curve above plus accuracy noise of +-0.02 and PPL noise of +-4%.
    acc = [0.11, 0.38, 0.72, 0.79, 0.83, 0.80, 0.81, 0.79]
    ppl = [5.1, 2.9, 2.05, 1.76, 1.83, 2.45, 3.3, 3.9]
    assert label_stages(acc, ppl).labels == [U, U, H, H, H, O, O, O]


def test_late_collapse_without_ppl_rise_is_underfit():
    assert label_stages([0.2, 0.8, 0.8, 0.3], [3.0, 2.0, 2.0, 2.1]).labels == [U, H, H, U]


def test_underfit_phase_takes_precedence_over_ppl():
    # Early PPL bump before the task is learned is not over-memorization.
    assert label_stages([0.05, 0.1, 0.7, 0.72], [3.0, 4.5, 2.0, 2.0]).labels == [U, U, H, H]


def test_tau_and_delta_are_configurable():
    acc, ppl = [0.6, 0.8, 0.78], [2.0, 1.5, 1.8]      # ratio 1.2
    assert label_stages(acc, ppl).labels[2] == H
    assert label_stages(acc, ppl, rule=StageRule(tau=0.1)).labels[2] == O
    assert label_stages(acc, ppl, rule=StageRule(tau=0.1, delta=0.01)).labels[2] == F


def test_input_validation():
    with pytest.raises(UserError, match="not percentages"):
        label_stages([50, 80], [2, 2])
    with pytest.raises(UserError, match="2 accuracies but 3"):
        label_stages([0.5, 0.8], [2, 2, 2])
    with pytest.raises(UserError, match="finite and >= 1"):
        label_stages([0.5, 0.8], [2, np.nan])
    with pytest.raises(UserError, match="acc_n"):
        label_stages([0.5, 0.8], [2, 2], acc_n=[10])
    with pytest.raises(UserError, match="no checkpoints"):
        label_stages([], [])
    with pytest.raises(UserError, match="tau"):
        StageRule(tau=0)
    with pytest.raises(UserError, match="min_consecutive"):
        StageRule(min_consecutive=0)
    with pytest.raises(UserError, match="unknown stage"):
        label_stages([0.5], [2.0]).indices("memorized")
    assert set(label_stages([0.1, 0.9], [2.0, 3.0]).labels) <= set(LABELS)
