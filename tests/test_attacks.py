"""The attack registry (one file per attack) and the new attacks against hand computations;
the blind baseline flags a split shifted on purpose and not the demo's."""

import math
import sys
import types

import numpy as np
import pytest

from finemem.audit import attacks as A
from finemem.audit.attacks.dcpdd import dcpdd_score
from finemem.audit.attacks.neighbourhood import neighbour_texts, neighbourhood_score, vocabulary
from finemem.audit.attacks.recall import recall_score
from finemem.audit.attacks.trajectory import first_below_band, trajectory_score
from finemem.errors import UserError
from finemem.metrics.blind import blind_baseline_auc, blind_baseline_scores, distribution_shift
from finemem.metrics import membership as mi


class TS:  # a stand-in for engine TokenScores
    def __init__(self, lp):
        self.logprob = np.asarray(lp, float)
        self.mu = self.sigma = None

    def __len__(self):
        return self.logprob.size


def test_registry_holds_the_six_and_the_new_ones():
    names = set(A.attack_names())
    assert {"loss", "zlib", "min_k", "min_k_pp", "reference", "rmia"} == set(
        A.attack_names(default_only=True))
    assert {"recall", "dcpdd", "neighbourhood", "trajectory"} <= names
    assert A.get_attack("reference").needs == ("base",)
    with pytest.raises(UserError, match="Did you mean: recall"):
        A.get_attack("recal")


def test_adding_an_attack_is_one_module(monkeypatch):
    """A module in the package registering one decorated function is all an attack takes:
    the probe's config accepts it and `attack_scores` runs it."""
    mod = types.ModuleType("finemem.audit.attacks.max_lp")
    exec("from finemem.audit.attacks import register_attack\n"
         "@register_attack('max_lp', member_when='higher')\n"
         "def max_lp(inp):\n"
         "    '''the largest token log p'''\n"
         "    return [s.logprob.max() for s in inp.scores]\n", mod.__dict__)
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    try:
        from finemem.audit.probes.membership import MembershipConfig

        assert MembershipConfig(attacks=["loss", "max_lp"]).attacks == ["loss", "max_lp"]
        s = A.attack_scores(["max_lp", "loss"], [TS([-1, -0.5]), TS([-2.0])], None, ["a", "b"],
                            population=np.array([1]))
        assert s["max_lp"].tolist() == [-0.5, -2.0] and s["loss"].tolist() == [0.75, 2.0]
        assert A.separation("max_lp", [1.0], [0.0], fprs=[])[0][2].value == 1.0
    finally:
        A.ATTACKS.pop("max_lp", None)


def test_config_refuses_unknown_attacks_and_unanswerable_needs():
    from pydantic import ValidationError

    from finemem.audit.probes.canaries import CanariesConfig
    from finemem.audit.probes.membership import MembershipConfig

    with pytest.raises(ValidationError, match="Did you mean: neighbourhood"):
        MembershipConfig(attacks=["neighborhood"])
    with pytest.raises(ValidationError, match="needs history"):
        CanariesConfig(attacks=["trajectory"])


def test_recall_hand_computed():
    # LL(x) = -1.0, LL(x|P) = -1.5 -> 1.5; LL = -2.0, -2.2 -> 1.1
    assert recall_score([-1.0, -2.0], [-1.5, -2.2]).round(6).tolist() == [1.5, 1.1]
    inp = A.AttackInputs([TS([-1.0, -1.0]), TS([-2.0])], ["a", "b"], np.array([1]),
                         provide={"prefixed": lambda: [TS([-1.0, -2.0]), TS([-2.2])]})
    assert A.get_attack("recall").fn(inp).round(6).tolist() == [1.5, 1.1]


def test_dcpdd_hand_computed():
    counts = np.array([3.0, 0.0, 1.0, 0.0])                  # f = (c+1)/(4+4) = [.5, .125, .25, .125]
    lp = [np.log([0.5, 0.2, 0.5, 0.9])]                       # tokens 0, 1, 0, 3
    want = (0.5 * math.log(2) + 0.2 * math.log(8) + 0.9 * math.log(8)) / 3
    got = dcpdd_score(lp, [[0, 1, 0, 3]], counts, cap=10.0)[0]
    assert got == pytest.approx(want)
    capped = dcpdd_score(lp, [[0, 1, 0, 3]], counts, cap=0.4)[0]
    assert capped == pytest.approx((0.3466 + 0.4 + 0.4) / 3, abs=1e-4)


def test_neighbourhood_hand_computed_and_seeded():
    assert neighbourhood_score([1.0], [[2.0, 4.0]]).tolist() == [-2.0]
    v = vocabulary(["alpha beta gamma", "delta"])
    assert v == ["alpha", "beta", "delta", "gamma"]
    a = neighbour_texts("alpha beta gamma delta", v, k=3, rate=0.5, seed=("x", 1))
    assert a == neighbour_texts("alpha beta gamma delta", v, k=3, rate=0.5, seed=("x", 1))
    for t in a:  # two of four words swapped, each for a different word
        assert sum(x != y for x, y in zip(t.split(), "alpha beta gamma delta".split())) == 2


def test_trajectory_hand_computed():
    h = [[4.0, 4.0, 4.0], [2.0, 3.5, 4.0]]                  # base, checkpoint 1
    # checkpoint 2 losses [1, 3, 4.5]: drops (2, 3) / 2, (0.5, 1) / 2, (0, -0.5) / 2
    assert trajectory_score(h, [1.0, 3.0, 4.5]).tolist() == [2.5, 0.75, -0.25]
    assert trajectory_score(np.zeros((0, 2)), [1.0, 2.0]).tolist() == [0.0, 0.0]
    assert first_below_band([[4, 4, 4], [2, 4, 4]], np.array([True, False, False]),
                            q=0.0).tolist() == [1, -1, -1]


def _arith(split, n, seed=0):
    from finemem.data.tasks import get_task

    return [e.prompt + e.completion for e in get_task("arith").generate(split, n, seed)]


def test_blind_baseline_flags_a_shifted_split_not_the_demo_split():
    # the demo's split: train vs test problems of the same generator
    mem, non = _arith("train", 150), _arith("test", 150)
    sm, sn = blind_baseline_scores(mem, non, seed=0)
    lo, hi = mi.auc_interval(sm, sn, n_boot=500, seed=0)
    assert not distribution_shift(lo), (lo, hi)
    # shifted on purpose: the non-members come from the ood split (other events, longer)
    shifted = _arith("ood", 150)
    sm, sn = blind_baseline_scores(mem, shifted, seed=0)
    lo, hi = mi.auc_interval(sm, sn, n_boot=500, seed=0)
    assert distribution_shift(lo), (lo, hi)
    assert blind_baseline_auc(mem, shifted) == blind_baseline_auc(mem, shifted)  # seeded


def test_blind_baseline_too_few_texts_is_nan():
    with pytest.warns(RuntimeWarning):
        assert math.isnan(blind_baseline_auc(["a"], ["b", "c"]))


@pytest.mark.integration
def test_new_attacks_run_from_the_membership_probe(tmp_path):
    """`--probes membership` with `audit.membership.attacks` set runs the new attacks on every
    checkpoint, through the context (base, prefixed, neighbour scores, stored history), and
    stores the blind baseline beside them."""
    from typer.testing import CliRunner

    from _membership_run import canary_run
    from finemem.cli import app
    from finemem.store import Store

    import shutil

    # a copy: the other tests of the shared run read its default attacks' rows
    run = tmp_path / "run"
    shutil.copytree(canary_run()[0], run)
    r = CliRunner().invoke(app, ["audit", str(run), "--probes", "membership", "--set",
                                 "audit.membership.attacks=[loss,recall,dcpdd,neighbourhood,"
                                 "trajectory]", "--set", "audit.membership.neighbours=2"])
    assert r.exit_code == 0, r.output
    assert "blind baseline" in r.output
    with Store(run / "results.sqlite") as s:
        rows = [x.as_dict() for x in s.metrics(split="membership")]
    auc = {(x["checkpoint"], x["settings"]["attack"]): x for x in rows
           if x["name"] == "membership_auc"}
    cks = sorted({c for c, _ in auc})
    assert len(cks) == 4                                   # the base and 3 epochs
    for c in cks:
        for a in ("recall", "dcpdd", "neighbourhood", "trajectory"):
            x = auc[(c, a)]
            assert 0 <= x["value"] <= 1 and x["lo"] <= x["value"] <= x["hi"], (c, a, x)
    # the trajectory at the base has no path yet (every score 0): chance
    assert auc[("step-000000", "trajectory")]["value"] == 0.5
    # ReCaLL's prefix takes 2 of the 100 non-members: this audit scored 98
    blind = [x for x in rows if x["name"] == "blind_baseline_auc"
             and x["settings"]["nonmembers"] == 98]
    assert len(blind) == 4 and len({x["value"] for x in blind}) == 1   # model-free: one value
    assert 0.3 < blind[0]["value"] < 0.7                # arith train vs test: no shift


def test_recommend_and_the_membership_table_say_when_the_split_is_shifted():
    from finemem.analysis.leakage import blind_shift_note

    class Row:
        def __init__(self, lo):
            self.b = {"value": 0.9, "lo": lo, "hi": 0.95}

        def find(self, key, **_):
            return self.b if key == "membership/blind_baseline_auc" else None

    note = blind_shift_note([Row(0.50), Row(0.80)])
    assert "members and non-members differ in distribution" in note and "0.80" in note
    assert blind_shift_note([Row(0.54), Row(None)]) is None


def test_spv_hand_computed():
    from finemem.audit.attacks.spv import spv_score

    # mean log p: ln(.5) and ln(.25) under the model, ln(.25) and ln(.5) under the reference
    got = spv_score([np.log([0.5, 0.5]), np.log([0.25])], [np.log([0.25, 0.25]), np.log([0.5])])
    assert got.tolist() == pytest.approx([math.log(2), -math.log(2)])
    inp = A.AttackInputs([TS([-1.0, -3.0]), TS([-0.5])], ["a", "b"], np.array([1]),
                         provide={"self_reference": lambda: [TS([-2.5, -2.5]), TS([-1.0])]})
    assert A.get_attack("spv").fn(inp).tolist() == pytest.approx([0.5, 0.5])


def test_spv_reference_config_keeps_base_and_method_and_trains_briefly(tmp_path):
    from finemem.audit.selfref import reference_config, reference_key
    from finemem.config import RunConfig
    from finemem.data.example import Example

    cfg = RunConfig.model_validate({
        "run_dir": str(tmp_path / "run"), "model": "builtin:test",
        "data": {"train": {"source": "builtin:arith", "n": 8}, "canaries": {"tiers": [1]},
                 "eval": {"test": {"source": "builtin:arith", "split": "test", "n": 8}}},
        "training": {"method": "lora", "lr": 1e-3, "batch_size": 16, "save_every": "epoch"}})
    sub = reference_config(cfg, tmp_path / "ref", tmp_path / "ref" / "t.jsonl", steps=3,
                           lr=None, n=5, seed=0)
    assert sub.model == cfg.model and sub.training.method == "lora"
    assert sub.training.max_steps == 3 and sub.training.save_every == 3
    assert sub.training.batch_size == 5 and sub.training.lr == 1e-3
    assert sub.data.canaries is None and sub.data.eval == {} and sub.data.format == "plain"
    t = [Example("q", "a", id="1")]
    assert reference_key(t, {"s": 1}, ["h1"]) == reference_key(t, {"s": 1}, ["h1"])
    assert reference_key(t, {"s": 1}, ["h1"]) != reference_key(t, {"s": 1}, ["h2"])


@pytest.mark.integration
def test_spv_runs_from_the_membership_probe_and_reuses_its_reference(tmp_path):
    """`spv` on a tiny run: one reference per audited checkpoint is fine-tuned by finemem's
    train path into RUN_DIR/references/, its AUC stored; a rerun trains nothing new."""
    import torch
    import yaml
    from typer.testing import CliRunner

    from finemem.cli import app
    from finemem.store import Store

    torch.set_num_threads(1)
    cfg = {"run_dir": str(tmp_path / "run"), "model": "builtin:test",
           "data": {"train": {"source": "builtin:arith", "split": "train", "n": 24},
                    "eval": {"test": {"source": "builtin:arith", "split": "test", "n": 40}}},
           "training": {"epochs": 1, "lr": 3e-3, "batch_size": 16},
           "audit": {"membership": {"members": 24, "nonmembers": 30, "n_boot": 100,
                                    "fprs": [0.1], "attacks": ["loss", "spv"],
                                    "spv_prompts": 6, "spv_new_tokens": 12,
                                    "spv_steps": 2}}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runner = CliRunner()
    r = runner.invoke(app, ["train", "--config", str(path), "--no-progress"])
    assert r.exit_code == 0, r.output
    run = tmp_path / "run"
    r = runner.invoke(app, ["audit", str(run), "--probes", "membership", "--quiet"])
    assert r.exit_code == 0, r.output
    refs = sorted((run / "references").iterdir())
    assert len(refs) == 2                                  # the base and the one epoch
    for d in refs:                                         # 6 texts, one checkpoint at step 2
        assert len((d / "texts.jsonl").read_text().splitlines()) == 6
        assert [p.name for p in (d / "run" / "checkpoints").iterdir()] == ["step-000002"]
    with Store(run / "results.sqlite") as s:
        auc = [x.as_dict() for x in s.metrics(split="membership")
               if x.name == "membership_auc" and x.as_dict()["settings"]["attack"] == "spv"]
    assert len(auc) == 2 and all(0 <= x["value"] <= 1 for x in auc)
    def stamp():  # the reference's weights, untouched when it is reused
        return {f: f.stat().st_mtime_ns for d in refs
                for f in (d / "run" / "checkpoints" / "step-000002").iterdir()}
    before = stamp()
    r = runner.invoke(app, ["audit", str(run), "--probes", "membership", "--quiet",
                            "--set", "audit.membership.n_boot=101"])
    assert r.exit_code == 0, r.output
    assert sorted((run / "references").iterdir()) == refs
    assert stamp() == before


def test_spv_refuses_to_prompt_with_the_scored_nonmembers():
    """With no non-member left over beyond those scored, spv would train its reference on
    the scored non-members' prompts: refused with what to change."""
    from finemem.audit.probes.membership import Membership, MembershipConfig
    from finemem.data.example import Example

    class Ctx:
        class cfg:
            class data:
                loss_on = "completion"

        def members(self, n, seed):
            return [(Example("q", f"m{i}", id=f"m{i}"), 1) for i in range(4)]

        def nonmembers(self, n, seed, members):
            return [Example("q", f"n{i}", id=f"n{i}") for i in range(3)]

    probe = Membership(MembershipConfig(attacks=["loss", "spv"], nonmembers=3, fprs=[]))
    with pytest.raises(UserError, match="spv attack prompts the model with non-members"):
        probe.prepare(Ctx())


def _prepared_membership(attacks, nonmembers, pool_size=30):
    """A membership probe prepared on a stand-in context: 10 members, a pool of non-members."""
    from finemem.audit.members import seeded_sample
    from finemem.audit.probes import get_probe
    from finemem.data.example import Example

    pool = [Example(prompt=f"q{i}", completion=f"a{i}", id=f"t{i}") for i in range(pool_size)]
    mem = [Example(prompt=f"m{i}", completion=f"b{i}", id=f"m{i}") for i in range(10)]

    class Ctx:
        cfg = types.SimpleNamespace(data=types.SimpleNamespace(loss_on="completion"))

        def members(self, n, seed):
            return [(e, 1) for e in seeded_sample(mem, n, seed)]

        def nonmembers(self, n, seed, members):
            return seeded_sample(pool, n, seed)

    probe = get_probe("membership")
    p = probe(probe.Config(members=10, nonmembers=nonmembers, attacks=attacks, fprs=[0.1]))
    p.prepare(Ctx())
    return [str(e.id) for e in p.non], [str(e.id) for e in p.prefix]


def test_recall_prefix_comes_from_beyond_the_scored_nonmembers():
    # adding ReCaLL must not change who is scored: the trajectory reads earlier checkpoints'
    # rows of the same examples (it silently fell back to the base-only path before)
    alone, _ = _prepared_membership(["loss"], 20)
    with_recall, prefix = _prepared_membership(["loss", "recall"], 20)
    assert with_recall == alone and len(prefix) == 2 and not set(prefix) & set(alone)
    # an exhausted pool: the prefix is taken from the scored ones, which are then 28
    scored, prefix = _prepared_membership(["loss", "recall"], 30)
    assert len(scored) == 28 and len(prefix) == 2 and not set(prefix) & set(scored)
