import math

import pytest

from finemem.metrics.calibration import brier_score_loss, expected_calibration_error


def test_ece_tiny_hand_example():
    conf = [0.05, 0.15, 0.55, 0.58, 0.95, 1.0]
    correct = [0, 0, 1, 0, 1, 1]
    # bins: [0,.1): conf .05 acc 0 -> .05;  [.1,.2): .15 vs 0 -> .15;
    # [.5,.6): conf .565 acc .5 -> .065 (2 items);  [.9,1]: conf .975 acc 1 -> .025 (2 items)
    expected = (0.05 + 0.15 + 2 * 0.065 + 2 * 0.025) / 6
    assert expected_calibration_error(conf, correct) == pytest.approx(expected)


def test_ece_bins_matter_and_perfect_calibration():
    # One bin pools everything: |mean acc - mean conf| = |0.5 - 0.5| = 0.
    assert expected_calibration_error([0.1, 0.9], [0, 1], n_bins=1) == pytest.approx(0.0)
    assert expected_calibration_error([0.1, 0.9], [0, 1], n_bins=10) == pytest.approx(0.1)
    assert expected_calibration_error([1.0, 1.0, 0.0], [1, 1, 0]) == 0.0


def test_brier():
    assert brier_score_loss([0.9, 0.2], [1, 1]) == pytest.approx(0.325)
    assert brier_score_loss([1.0, 0.0], [1, 0]) == 0.0


def test_calibration_validation_and_empty():
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        expected_calibration_error([1.2], [1])
    with pytest.raises(ValueError, match="0/1"):
        brier_score_loss([0.5], [2])
    with pytest.raises(ValueError, match="2 confidences but 1"):
        brier_score_loss([0.5, 0.5], [1])
    with pytest.warns(RuntimeWarning):
        assert math.isnan(expected_calibration_error([], []))
