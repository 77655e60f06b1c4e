"""The one-run privacy audit (finemem/metrics/privacy_audit.py) against hand-computed values."""

import math

import numpy as np
import pytest
from scipy.stats import binom

from finemem.metrics.privacy_audit import (epsilon_from_guesses, epsilon_lower_bound, guesses,
                                           one_run_p_value)


def test_p_value_by_hand():
    # eps = 0: each guess is a fair coin; 3 of 4 right: P[Bin(4, .5) >= 3] = 5/16
    assert one_run_p_value(10, 4, 3, 0.0) == pytest.approx(5 / 16)
    # eps = log 3: q = 3/4; P[Bin(2, .75) >= 2] = 9/16
    assert one_run_p_value(10, 2, 2, math.log(3)) == pytest.approx(9 / 16)
    # delta term: m=10, r=2, v=2, eps=0: alpha = max(P[Bin=1]/1, P[Bin in {0,1}]/2)
    #           = max(0.5, 0.375) = 0.5 -> p = 0.25 + 2*10*0.01*0.5 = 0.35
    assert one_run_p_value(10, 2, 2, 0.0, delta=0.01) == pytest.approx(0.35)
    with pytest.raises(ValueError):
        one_run_p_value(3, 4, 1, 0.0)


def test_all_right_closed_form():
    # every guess right, delta 0: (q)^r = 1 - c  ->  eps = log(q / (1 - q))
    for r, c in [(10, 0.95), (100, 0.95), (100, 0.99), (1000, 0.95)]:
        q = (1 - c) ** (1 / r)
        assert epsilon_from_guesses(5000, r, r, confidence=c) == pytest.approx(
            math.log(q / (1 - q)), abs=1e-5)


def test_bound_is_where_the_p_value_crosses():
    eps = epsilon_from_guesses(1000, 200, 150, confidence=0.95)
    assert eps > 0
    q = lambda e: 1 / (1 + math.exp(-e))  # noqa: E731
    assert binom.sf(149, 200, q(eps - 1e-3)) < 0.05 <= binom.sf(149, 200, q(eps + 1e-3))


def test_no_evidence_and_monotone():
    assert epsilon_from_guesses(100, 20, 10) == 0.0
    assert epsilon_from_guesses(100, 0, 0) == 0.0
    # more right guesses -> higher bound; a delta to spend -> lower bound
    vals = [epsilon_from_guesses(1000, 100, v) for v in (70, 80, 90, 100)]
    assert vals == sorted(vals) and vals[0] > 0
    assert epsilon_from_guesses(1000, 100, 90, delta=1e-3) < epsilon_from_guesses(1000, 100, 90)


def test_guesses_and_ties():
    assert guesses([3, 1, 2, 5, 4], k_plus=2, k_minus=2).tolist() == [0, -1, -1, 1, 1]
    # a tie across the in-cut abstains on every tied score
    assert guesses([1, 2, 2, 3], k_plus=2, k_minus=1).tolist() == [-1, 0, 0, 1]
    assert guesses([], k_plus=1, k_minus=1).tolist() == []


def test_epsilon_lower_bound_end_to_end():
    rng = np.random.default_rng(0)
    # a random guesser (scores unrelated to membership) proves nothing
    coin = rng.random(400) < 0.5
    s = rng.normal(size=400)
    assert epsilon_lower_bound(s[coin], s[~coin]) < 0.5
    # perfectly separated: 200 canaries, 100 + 100 guesses all right -> 3.493 (closed form)
    assert epsilon_lower_bound(np.arange(100, 200), np.arange(100), k_plus=50,
                               k_minus=50) == pytest.approx(3.4930, abs=1e-3)
    # the loss side: lower is member
    assert epsilon_lower_bound(np.arange(100), np.arange(100, 200), k_plus=50, k_minus=50,
                               member_when="lower") == pytest.approx(3.4930, abs=1e-3)
    with pytest.warns(RuntimeWarning):
        assert math.isnan(epsilon_lower_bound([], [1.0]))


def test_half_inclusion_canaries():
    """inclusion: half: every candidate has its tier and a seeded coin decides whether it is
    inserted; the draws are those of the tiers design (the coin has its own generator)."""
    from test_canaries import _Tok

    from finemem.config import Canaries
    from finemem.data.canaries import insert_canaries, make_canaries

    cfg = Canaries(families=["random", "record"], tiers=[1, 4], per_tier=10, twins=80, seed=2,
                   inclusion="half")
    a = make_canaries(cfg, _Tok())
    assert a == make_canaries(cfg, _Tok()) and len(a) == 2 * 100
    assert {c.audit_tier for c in a} == {1, 4}
    assert all(c.tier in (0, c.audit_tier) for c in a)
    n_in = sum(c.inserted for c in a)
    assert 70 <= n_in <= 130  # Binomial(200, 1/2): 100 +- 4.2 sd
    assert not any(c.id.startswith(("canary", "twin")) for c in a)  # ids do not say which
    tiers_design = make_canaries(cfg.model_copy(update={"inclusion": "tiers"}), _Tok())
    assert {(c.prompt, c.completion) for c in a} == \
        {(c.prompt, c.completion) for c in tiers_design}
    _, manifest = insert_canaries([], [], a)
    assert sum(r["times_per_epoch"] for r in manifest) == sum(c.tier for c in a)


def test_doctests_run():
    import doctest

    import finemem.data.dedup
    import finemem.metrics.privacy_audit

    for mod in (finemem.metrics.privacy_audit, finemem.data.dedup):
        res = doctest.testmod(mod)
        assert res.attempted > 0 and res.failed == 0, mod.__name__


def test_canaries_add_half(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from finemem.cli import app

    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"),
                                   "data": {"train": {"source": "builtin:arith"}}}))
    r = CliRunner().invoke(app, ["canaries", "add", str(cfg), "--families", "random",
                                 "--tiers", "1", "--per-tier", "50", "--twins", "150",
                                 "--inclusion", "half"])
    assert r.exit_code == 0, r.output
    assert "200 candidate canaries" in r.output
    assert yaml.safe_load(cfg.read_text())["data"]["canaries"]["inclusion"] == "half"
    r = CliRunner().invoke(app, ["canaries", "add", str(cfg), "--inclusion", "halves"])
    assert r.exit_code != 0 and "data.canaries.inclusion" in str(r.exception)
