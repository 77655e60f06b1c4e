import pytest

from finemem.analysis.recommend import recommend_checkpoint
from finemem.analysis.stages import label_stages
from finemem.errors import UserError

ACC = [0.10, 0.40, 0.70, 0.80, 0.82, 0.81, 0.80, 0.81]
PPL = [5.0, 3.0, 2.0, 1.8, 1.9, 2.5, 3.2, 4.0]
STEPS = list(range(0, 800, 100))
NAMES = [f"ckpt-{s}" for s in STEPS]
LABELS = label_stages(ACC, PPL).labels   # U U H H H O O O


def test_best_healthy_accuracy_without_sample_sizes():
    rec = recommend_checkpoint(NAMES, STEPS, ACC, PPL, LABELS)
    # Healthy: idx 2 (.70), 3 (.80), 4 (.82); .80 is 0.02 away, outside tie_tol 0.01.
    assert (rec.index, rec.name, rec.step) == (4, "ckpt-400", 400)
    assert rec.tied == [4] and not rec.fallback and rec.label == "healthy"
    assert rec.ppl_ratio_to_min == pytest.approx(1.9 / 1.8)
    e = rec.explanation
    assert "ckpt-400 (step 400): accuracy 0.820, test PPL 1.9 (1.06x" in e
    assert "3 checkpoint(s) were over-memorized, from step 500" in e
    assert "1.39x to 2.22x" in e and "2 checkpoint(s) were underfit" in e


def test_tie_tolerance_prefers_lower_ppl():
    rec = recommend_checkpoint(NAMES, STEPS, ACC, PPL, LABELS, tie_tol=0.025)
    assert rec.index == 3 and rec.tied == [3, 4]     # .80 ties .82, PPL 1.8 < 1.9


def test_confidence_interval_ties():
    # n=250: 200/250 has Wilson upper bound 0.845 >= 0.82 -> tie; 175/250 has 0.755 -> not.
    rec = recommend_checkpoint(NAMES, STEPS, ACC, PPL, LABELS, acc_n=[250] * 8)
    assert rec.index == 3 and rec.tied == [3, 4]
    assert rec.acc_lo == pytest.approx(0.7460, abs=1e-3)
    assert rec.acc_hi == pytest.approx(0.8450, abs=1e-3)
    assert "accuracy 0.800 [0.75, 0.84] n=250" in rec.explanation
    assert "ties with the best healthy accuracy 0.820 (ckpt-400)" in rec.explanation
    off = recommend_checkpoint(NAMES, STEPS, ACC, PPL, LABELS, acc_n=[250] * 8, ci_ties=False)
    assert off.index == 4


def test_equal_ppl_tie_goes_to_earlier_step():
    rec = recommend_checkpoint(["a", "b"], [10, 20], [0.8, 0.8], [2.0, 2.0],
                               ["healthy", "healthy"])
    assert rec.name == "a"


def test_fallback_when_nothing_is_healthy():
    labels = ["underfit", "over-memorized", "over-memorized", "overfit"]
    rec = recommend_checkpoint(["a", "b", "c", "d"], [1, 2, 3, 4], [0.3, 0.8, 0.805, 0.6],
                               [3.0, 2.6, 3.0, 3.5], labels)
    # Best .805 (c); b at .80 is within 0.01 and has lower PPL.
    assert rec.fallback and rec.name == "b" and rec.label == "over-memorized"
    assert "No checkpoint was healthy" in rec.explanation
    assert "1 checkpoint(s) were overfit, from step 4 (d)" in rec.explanation


def test_validation():
    with pytest.raises(UserError, match="one entry per checkpoint"):
        recommend_checkpoint(["a"], [1, 2], [0.5], [2.0], ["healthy"])
    with pytest.raises(UserError, match="unknown stage label"):
        recommend_checkpoint(["a"], [1], [0.5], [2.0], ["good"])
    with pytest.raises(UserError, match="no checkpoints"):
        recommend_checkpoint([], [], [], [], [])
