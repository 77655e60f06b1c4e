"""Membership inference: every attack and statistic against hand computations on a toy
distribution; then the `membership` probe end to end (negative control on the base model,
refusals, the leakage budget of `finemem recommend`)."""

import math
import sys
import warnings

import numpy as np
import pytest
from scipy.stats import beta
from typer.testing import CliRunner

from finemem.audit.attacks import attack_names
from finemem.metrics import membership as mi

# A toy model with a 3-token vocabulary and the same predictive distribution at every
# position: p = (0.5, 0.3, 0.2). Its log-probs, mean and std of log p (the Min-K%++ normalisers).
P = np.array([0.5, 0.3, 0.2])
LP = np.log(P)
MU = float((P * LP).sum())                             # -1.0297
# sigma = sqrt(0.5 * 0.3365^2 + 0.3 * 0.1743^2 + 0.2 * 0.5798^2) = 0.3646
SIGMA = float(np.sqrt((P * (LP - MU) ** 2).sum()))
# Two targets: tokens (0, 0, 1, 2) and (2, 2).
T1, T2 = LP[[0, 0, 1, 2]], LP[[2, 2]]


def test_toy_normalisers_by_hand():
    assert MU == pytest.approx(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    assert MU == pytest.approx(-1.0296530, abs=1e-6)
    assert SIGMA == pytest.approx(0.3646429, abs=1e-6)


def test_loss_and_zlib_by_hand():
    nll1 = -(2 * math.log(0.5) + math.log(0.3) + math.log(0.2)) / 4   # 1.0499
    nll2 = -math.log(0.2)                                              # 1.6094
    assert mi.loss_attack([T1, T2]).tolist() == pytest.approx([nll1, nll2])
    import zlib
    z = [len(zlib.compress(b"aabc")), len(zlib.compress(b"cc"))]
    assert mi.zlib_attack([T1, T2], ["aabc", "cc"]).tolist() == pytest.approx(
        [nll1 / z[0], nll2 / z[1]])
    with pytest.raises(ValueError):
        mi.zlib_attack([T1, T2], ["one text"])


def test_min_k_by_hand():
    # k = 0.5 of 4 tokens keeps the 2 least likely: log 0.3 and log 0.2
    assert mi.min_k_attack([T1], k=0.5)[0] == pytest.approx((math.log(0.3) + math.log(0.2)) / 2)
    # at least one token is kept: k = 0.2 of 2 tokens keeps log 0.2
    assert mi.min_k_attack([T2], k=0.2)[0] == pytest.approx(math.log(0.2))
    assert mi.min_k_attack([T1], k=1.0)[0] == pytest.approx(T1.mean())


def test_min_k_pp_by_hand():
    mu, sd = np.full(4, MU), np.full(4, SIGMA)
    z = (np.log([0.3, 0.2]) - MU) / SIGMA          # the two lowest normalised tokens
    got = mi.min_k_pp_attack([T1], [mu], [sd], k=0.5)[0]
    assert got == pytest.approx(z.mean())
    assert got == pytest.approx(((-1.2039728 + 1.0296530) + (-1.6094379 + 1.0296530)) / 2
                                / 0.3646429, abs=1e-6)


def test_reference_by_hand():
    ref = [np.log([0.25, 0.25, 0.25, 0.25]), np.log([0.2, 0.2])]
    got = mi.reference_attack([T1, T2], ref)
    assert got.tolist() == pytest.approx([T1.mean() - math.log(0.25), 0.0])


def test_rmia_by_hand():
    # a = 1: LR = p_bar / p_bar_ref; x beats z when LR(x) > LR(z)
    q_lp, q_ref = [-0.1, -2.0], [-1.0, -1.0]
    pop_lp, pop_ref = [-0.5, -1.5, -3.0], [-1.0, -1.0, -1.0]
    assert mi.rmia_attack(q_lp, q_ref, pop_lp, pop_ref, a=1.0).tolist() == [1.0, 1 / 3]
    # a = 0.5: LR = p_bar / (0.75 p_bar_ref + 0.25), by hand
    def lr(lp, ref):
        return math.exp(lp) / (0.5 * (1.5 * math.exp(ref) + 0.5))
    q = [lr(-0.4, -0.2), lr(-0.4, -2.0)]                     # 0.7758, 1.9070
    pop = [lr(-0.5, -1.0), lr(-1.0, -0.1), lr(-0.3, -3.0)]   # 1.1533, 0.3962, 2.5782
    want = [sum(x > z for z in pop) / 3 for x in q]
    assert want == [1 / 3, 2 / 3]
    got = mi.rmia_attack([-0.4, -0.4], [-0.2, -2.0], [-0.5, -1.0, -0.3], [-1.0, -0.1, -3.0],
                         a=0.5)
    assert got.tolist() == pytest.approx(want)
    # a query that is population member 1 is compared with the other two only
    got = mi.rmia_attack([-1.0], [-0.1], [-0.5, -1.0, -0.3], [-1.0, -0.1, -3.0], a=0.5,
                         self_index=[1])
    assert got.tolist() == [0.0]
    with pytest.raises(ValueError):
        mi.rmia_attack([0.0], [0.0], [0.0], [0.0], a=1.5)


def test_rmia_with_a_one_ranks_as_reference():
    rng = np.random.default_rng(0)
    lp, ref = rng.normal(-1, 0.3, 50), rng.normal(-1.2, 0.3, 50)
    pop = np.arange(25, 50)
    s = mi.rmia_attack(lp, ref, lp[pop], ref[pop], a=1.0)
    r = lp - ref
    i, j = np.argsort(r), np.argsort(s, kind="stable")
    assert np.all(np.diff(s[i]) >= 0)  # monotone in the reference score
    assert j.size == 50


def test_auc_by_hand():
    # pairs: 3>1, 3>2, 2>1, 2=2 (half) -> 3.5 / 4
    assert mi.membership_auc([3, 2], [1, 2]) == 0.875
    assert mi.membership_auc([3, 2], [1, 2], member_when="lower") == 0.125
    with pytest.warns(RuntimeWarning):
        assert math.isnan(mi.membership_auc([], [1.0]))


def test_auc_interval():
    rng = np.random.default_rng(1)
    m, n = rng.normal(1, 1, 80), rng.normal(0, 1, 80)
    auc = mi.membership_auc(m, n)
    lo, hi = mi.auc_interval(m, n, n_boot=500)
    assert lo < auc < hi and 0.0 <= lo and hi <= 1.0 and hi - lo < 0.3
    assert mi.auc_interval([2.0, 3.0], [0.0, 1.0]) == (1.0, 1.0)  # perfectly separated
    # the rank AUC of the bootstrap equals scikit-learn's on the sample itself
    lo1, hi1 = mi.auc_interval(m, n, n_boot=100, conf=1e-9)
    assert lo1 == pytest.approx(hi1, abs=0.05)


def test_tpr_at_fpr_by_hand_with_clopper_pearson():
    # fpr 0.25 of 4 non-members allows 1 false positive: threshold 3 flags members 5 and 4
    tpr, (lo, hi), k = mi.tpr_at_fpr([5, 4, 1], [3, 2, 0, -1], fpr=0.25)
    assert (tpr, k) == (2 / 3, 2)
    assert lo == pytest.approx(beta.ppf(0.025, 2, 2)) and hi == pytest.approx(beta.ppf(0.975, 3, 1))
    # lower side: small losses are members
    tpr, _, k = mi.tpr_at_fpr([-5, -4, -1], [-3, -2, 0, 1], fpr=0.25, member_when="lower")
    assert k == 2


def test_roc_points_by_hand():
    # thresholds 5, 4, 3, 2, 1, 0, -1 over members {5, 4, 1} and non-members {3, 2, 0, -1}
    f, t = mi.roc_points([5, 4, 1], [3, 2, 0, -1])
    assert f.tolist() == [0, 0, 0, 0.25, 0.5, 0.5, 0.75, 1]
    assert t.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    # its area is the AUC: 10 of the 12 pairs ranked right
    assert np.trapezoid(t, f) == pytest.approx(5 / 6) == mi.membership_auc([5, 4, 1],
                                                                           [3, 2, 0, -1])
    f2, t2 = mi.roc_points([-5, -4, -1], [-3, -2, 0, 1], member_when="lower")
    assert f2.tolist() == f.tolist() and t2.tolist() == t.tolist()
    with pytest.raises(ValueError, match="needs members and non-members"):
        mi.roc_points([], [1.0])


def test_tpr_refused_when_nonmembers_are_too_few():
    assert mi.needed_nonmembers(0.01) == 100 and mi.needed_nonmembers(0.001) == 1000
    with pytest.raises(ValueError, match="needs at least 100 non-members, got 99"):
        mi.tpr_at_fpr([1.0], np.zeros(99), fpr=0.01)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert math.isnan(mi.membership_tpr_at_fpr([1.0], np.zeros(99), fpr=0.01))
    assert "100 non-members" in str(w[0].message)


def test_exposure_by_hand():
    # twins' NLLs 1, 2, 3 (T = 3): a canary at 2.5 ranks 3rd -> log2 4 - log2 3
    assert mi.exposure_rank([2.5], [1.0, 2.0, 3.0])[0] == pytest.approx(2 - math.log2(3))
    assert mi.exposure_rank([9.0], [1.0, 2.0, 3.0])[0] == 0.0
    twins = np.random.default_rng(0).normal(5.0, 1.0, 200)
    # a saturated rank (more likely than every twin) is extrapolated: -log2 F_skewnorm(nll)
    from scipy.stats import skewnorm
    want = -skewnorm.logcdf(0.5, *skewnorm.fit(np.sort(twins))) / math.log(2)
    e = mi.exposure_per_canary([0.5, 5.0], twins)
    assert e[0] == pytest.approx(want) and e[0] > math.log2(201) + 5
    assert e[1] == pytest.approx(mi.exposure_rank([5.0], twins)[0])
    assert mi.exposure([0.5, 5.0], twins) == pytest.approx(e.mean())


# --- the probe, end to end on builtin:test ---------------------------------------------------

@pytest.fixture(scope="module")
def run():
    from _membership_run import canary_run

    return canary_run()[0]


def _rows(run, split, name):
    import json

    from finemem.store import Store

    with Store(run / "results.sqlite") as s:
        return [dict(r, settings=json.loads(r["setting"] or "{}"))
                for r in s.metrics(split=split, name=name)]


@pytest.mark.integration
def test_negative_control_base_does_not_separate(run):
    aucs = {r["settings"]["attack"]: r for r in _rows(run, "membership", "membership_auc")
            if r["checkpoint"] == "step-000000"}
    assert set(attack_names(default_only=True)) <= set(aucs)  # other tests add attacks
    loss = aucs["loss"]
    assert loss["lo"] <= 0.5 <= loss["hi"] and loss["n"] == 24
    assert loss["settings"]["nonmembers"] == 100
    # the base is its own reference: the reference score is 0 for everyone
    assert aucs["reference"]["value"] == 0.5


@pytest.mark.integration
def test_trained_model_separates_and_every_figure_has_an_interval(run):
    rows = _rows(run, "membership", "membership_auc")
    last = max(r["checkpoint"] for r in rows)
    loss = next(r for r in rows if r["checkpoint"] == last and r["settings"]["attack"] == "loss")
    assert loss["value"] > 0.6 and loss["lo"] > 0.5
    for r in rows + _rows(run, "membership", "membership_tpr_at_fpr"):
        assert r["lo"] <= r["value"] <= r["hi"]


@pytest.mark.integration
def test_fpr_the_nonmembers_cannot_resolve_is_refused(run):
    tprs = _rows(run, "membership", "membership_tpr_at_fpr")
    assert {r["settings"]["fpr"] for r in tprs} == {0.01}   # 0.001 needs 1000 non-members
    from _membership_run import canary_run

    assert "needs >= 1000 non-members, has 100" in canary_run()[1]["audit"]


@pytest.mark.integration
def test_recommend_with_leakage_budget(run):
    from finemem.cli import app

    r = CliRunner().invoke(app, ["recommend", str(run), "--max-leakage", "auc=0.99"])
    assert r.exit_code == 0, r.output
    assert "accuracy vs leakage" in r.output and "Within auc <= 0.99" in r.output
    assert (run / "report" / "leakage.png").stat().st_size > 1000
    r = CliRunner().invoke(app, ["recommend", str(run), "--max-leakage", "auc=0.0"])
    assert r.exit_code == 0 and "No checkpoint is within auc <= 0" in r.output


@pytest.mark.integration
@pytest.mark.parametrize("args,msg", [
    (["--max-leakage", "auc"], "--max-leakage expects"),
    (["--max-leakage", "auc=1.5"], "--max-leakage expects"),
    (["--max-leakage", "privacy=0.1"], "--max-leakage expects"),
    (["--attack", "losss"], "Unknown attack 'losss'. Did you mean: loss?"),
])
def test_bad_recommend_input_is_one_line_exit_2(run, args, msg, monkeypatch, capsys):
    from finemem.cli import main

    plot = run / "report" / "leakage.png"
    before = plot.stat().st_mtime_ns if plot.exists() else None
    monkeypatch.setattr(sys, "argv", ["finemem", "recommend", str(run), *args])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr()
    assert e.value.code == 2 and msg in err.err and len(err.err.strip().splitlines()) == 1
    assert "Recommended" not in err.out
    assert (plot.stat().st_mtime_ns if plot.exists() else None) == before


@pytest.mark.integration
def test_overlapping_nonmembers_are_refused_with_ids(run, monkeypatch, capsys):
    from finemem.cli import main

    monkeypatch.setattr(sys, "argv", [
        "finemem", "audit", str(run), "--probes", "membership", "--quiet",
        "--set", "audit.nonmembers={source: 'builtin:arith', split: train, n: 30}"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "non-members are also training examples (ids" in err
    assert len(err.strip().splitlines()) == 1
