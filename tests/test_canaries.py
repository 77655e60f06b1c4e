"""Canaries: drawing (deterministic, twins disjoint), insertion into the data and the
manifest, `finemem canaries add/show`, bad input, and the positive control: a `test`-size
model trained on 16x canaries detects them (TPR at 1% FPR >= 0.9 against 100 twins)."""

import sys

import pytest
import yaml
from typer.testing import CliRunner

from finemem.config import Canaries
from finemem.data.canaries import insert_canaries, make_canaries, read_canaries
from finemem.data.example import Example
from finemem.errors import UserError


class _Tok:
    """Enough of a tokenizer for the random family: 40 whole-word tokens."""
    words = [f" w{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(40)]

    def __len__(self):
        return len(self.words)

    def decode(self, ids):
        return "".join(self.words[i] for i in ids)

    def __call__(self, s, add_special_tokens=False):
        return {"input_ids": [self.words.index(s)] if s in self.words else [0, 0]}


def test_draw_is_deterministic_and_twins_are_disjoint():
    cfg = Canaries(families=["random", "record"], tiers=[1, 4], per_tier=3, twins=20, seed=7)
    a, b = make_canaries(cfg, _Tok()), make_canaries(cfg, _Tok())
    assert a == b
    assert len(a) == 2 * (2 * 3 + 20)
    ins = [c for c in a if c.inserted]
    twins = [c for c in a if not c.inserted]
    assert {c.tier for c in ins} == {1, 4} and len(twins) == 40
    assert not {(c.prompt, c.completion) for c in ins} & {(c.prompt, c.completion) for c in twins}
    rec = next(c for c in a if c.family == "record")
    assert rec.prompt.startswith("Customer record of ") and " code " in rec.completion
    rnd = next(c for c in a if c.family == "random")
    assert len(rnd.completion.split()) == cfg.length
    assert make_canaries(cfg.model_copy(update={"seed": 8}), _Tok()) != a


def test_high_perplexity_family_keeps_the_most_perplexing_half():
    cfg = Canaries(families=["highppl"], tiers=[1], per_tier=2, twins=4)
    scored = []

    def scorer(examples):
        scored.extend(examples)
        return [float(len(e.completion)) for e in examples]   # longer = more perplexing

    cans = make_canaries(cfg, _Tok(), scorer=scorer)
    assert len(scored) == 4 * 6 and len(cans) == 6
    cut = sorted((len(e.completion) for e in scored), reverse=True)[11]
    assert all(len(c.completion) >= cut for c in cans)
    with pytest.raises(UserError, match="base model"):
        make_canaries(cfg, _Tok())


def test_insert_repeats_by_tier_and_records_in_manifest():
    cfg = Canaries(families=["record"], tiers=[1, 3], per_tier=2, twins=5)
    cans = make_canaries(cfg, _Tok())
    data = [Example("q", "a", id="x0")]
    man = [{"id": "x0", "times_per_epoch": 1, "prompt_chars": 1, "completion_chars": 1}]
    exp, man2 = insert_canaries(data, man, cans)
    assert len(exp) == 1 + 2 * 1 + 2 * 3
    rows = [r for r in man2 if "canary" in r]
    assert len(rows) == 4 and {r["times_per_epoch"] for r in rows} == {1, 3}
    assert all(r["canary"]["family"] == "record" for r in rows)
    clash = [{"id": cans[0].id, "times_per_epoch": 1, "prompt_chars": 1, "completion_chars": 1}]
    with pytest.raises(UserError, match="canary ids"):
        insert_canaries([], clash, cans)


@pytest.mark.parametrize("tiers,msg", [([1, 0], "got 0"), ([4, -2], "got -2")])
def test_tier_of_zero_or_less_is_refused(tiers, msg):
    with pytest.raises(Exception, match=msg):
        Canaries(tiers=tiers)


def test_cli_add_refuses_bad_tier_in_one_line(tmp_path, monkeypatch, capsys):
    from _membership_run import base_config

    from finemem.cli import main

    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump(base_config(tmp_path)))
    before = p.read_text()
    monkeypatch.setattr(sys, "argv", ["finemem", "canaries", "add", str(p), "--tiers", "1,0"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "data.canaries.tiers" in err and "got 0" in err
    assert p.read_text() == before


# --- end to end: finemem canaries add, train, audit ------------------------------------------

@pytest.fixture(scope="module")
def run():
    from _membership_run import canary_run

    return canary_run()


@pytest.mark.integration
def test_add_writes_section_and_probe(run):
    from _membership_run import config_path

    raw = yaml.safe_load(config_path().read_text())
    assert raw["data"]["canaries"]["tiers"] == [1, 16]
    assert "canaries" in raw["audit"]["probes"]
    assert "next: finemem train" in run[1]["add"]


@pytest.mark.integration
def test_manifest_and_canary_file(run):
    from finemem.data.duplication import read_manifest

    run_dir = run[0]
    cans = read_canaries(run_dir)
    assert sum(c.inserted for c in cans) == 20 and sum(not c.inserted for c in cans) == 100
    rows = [r for r in read_manifest(run_dir / "manifest.jsonl") if "canary" in r]
    assert sorted(r["times_per_epoch"] for r in rows) == [1] * 10 + [16] * 10


@pytest.mark.integration
def test_positive_control_16x_canaries_are_detected(run):
    """TPR at 1% FPR >= 0.9 for the 16x tier, against 100 twins (enough for 1% FPR)."""
    import json

    from finemem.store import Store

    with Store(run[0] / "results.sqlite") as s:
        rows = [dict(r, st=json.loads(r["setting"])) for r in s.metrics(split="canaries")]
        last = s.checkpoints()[-1]["name"]
    tpr = [r for r in rows if r["checkpoint"] == last and r["name"] == "membership_tpr_at_fpr"
           and r["st"]["attack"] == "loss" and r["st"]["tier"] == 16]
    assert len(tpr) == 1 and tpr[0]["st"]["nonmembers"] == 100 and tpr[0]["n"] == 10
    assert tpr[0]["value"] >= 0.9, tpr[0]
    base = [r for r in rows if r["checkpoint"] == "step-000000" and r["name"] == "exposure"
            and r["st"] == {"tier": 16, "family": "all"}][0]
    top = [r for r in rows if r["checkpoint"] == last and r["name"] == "exposure"
           and r["st"] == {"tier": 16, "family": "all"}][0]
    assert top["value"] > base["value"] + 5 and top["lo"] <= top["value"] <= top["hi"]
    ext = [r for r in rows if r["checkpoint"] == last and r["name"] == "exact_greedy_extractable"
           and r["st"] == {"tier": 16}][0]
    assert 0 <= ext["lo"] <= ext["value"] <= ext["hi"] <= 1


@pytest.mark.integration
def test_show_prints_per_tier_table(run):
    from finemem.cli import app

    r = CliRunner().invoke(app, ["canaries", "show", str(run[0])])
    assert r.exit_code == 0, r.output
    assert "16x" in r.output and "1x" in r.output and "exposure" in r.output


@pytest.mark.integration
def test_canaries_on_a_run_trained_without_them(run, tmp_path, monkeypatch, capsys):
    """`canaries show` / the probe on a plain run, and `canaries add` for a config whose run_dir
    was trained without canaries, are refused saying how to rerun."""
    from finemem.cli import main

    plain = tmp_path / "plain"
    (plain / "checkpoints" / "step-000001").mkdir(parents=True)
    monkeypatch.setattr(sys, "argv", ["finemem", "canaries", "show", str(plain)])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "trained without canaries" in err and "new run_dir" in err
    from _membership_run import base_config

    cfg = base_config(tmp_path)
    cfg["run_dir"] = str(plain)
    p = tmp_path / "plain.yaml"
    p.write_text(yaml.safe_dump(cfg))
    monkeypatch.setattr(sys, "argv", ["finemem", "canaries", "add", str(p)])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "already trained without canaries" in err
    assert len(err.strip().splitlines()) == 1 and "canaries" not in yaml.safe_load(
        p.read_text())["data"]
