"""Eval sets: per builtin task from its declaration, user data with and without answers,
extractor inference, hold-out test sets, overlap warnings, and `finemem train` refusing a bad
eval set before it writes anything (plus self-contained run folders)."""

import json
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from finemem.audit.evalsets import (ROLES, EvalSet, check_eval_sets, eval_sets, infer_extractor,
                                    role_of, train_sample)
from finemem.config import parse_config
from finemem.data.example import Example
from finemem.data.tasks import TASKS, get_task, task_names
from finemem.errors import UserError
from finemem.metrics.answers import METHODS

ARITH_SETS = {"test": "test", "ood": "ood", "test_preamble": "variant",
              "test_distractor": "variant", "test_renamed": "variant",
              "test_reworded": "variant"}


def cfg_of(train, eval=None, **extra):
    return parse_config({"run_dir": "unused", "data": {"train": train, "eval": eval or {}},
                         **extra})


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_every_task_declares_its_eval_splits():
    for name in task_names():
        task = TASKS[name]
        assert task.eval_splits.get("test") == "test", name
        assert set(task.eval_splits) <= set(task.splits), name
        assert set(task.eval_splits.values()) <= set(ROLES), name
        assert task.answer_extractor is None or task.answer_extractor in METHODS


def test_arith_defaults_six_sets_with_roles_seed_and_options():
    cfg = cfg_of({"source": "builtin:arith", "n": 10, "seed": 2,
                  "options": {"pair_frac": 0.0, "events": [2, 2]}})
    sets = eval_sets(cfg)
    assert {k: s.role for k, s in sets.items()} == ARITH_SETS
    for s in sets.values():
        assert s.extractor == "hash" and s.graded and len(s.examples) == 300
        assert s.answer_regex is None
    # drawn with the training source's seed and options
    assert sets["test"].examples[:5] == get_task("arith", pair_frac=0.0, events=(2, 2)).generate(
        "test", 5, 2)


@pytest.mark.parametrize("task,extractor", [("summarize", None), ("dialog", None),
                                            ("qa", "first_line"), ("translate", "first_line"),
                                            ("sentiment", "first_line")])
def test_text_tasks_get_test_only_with_their_extractor(task, extractor):
    sets = eval_sets(cfg_of({"source": f"builtin:{task}", "n": 10}))
    assert list(sets) == ["test"] and sets["test"].role == "test"
    assert sets["test"].extractor == extractor and sets["test"].graded is (extractor is not None)
    # the declared extractor grades the reference completions right (no warning)
    assert check_eval_sets(cfg_of({"source": f"builtin:{task}", "n": 10})) == []


def test_user_jsonl_with_and_without_answers(tmp_path):
    hashed = write_jsonl(tmp_path / "hash.jsonl", [
        {"prompt": f"{i}+1?", "completion": f" {i}+1={i + 1}\n#### {i + 1}", "answer": i + 1}
        for i in range(6)])
    labels = write_jsonl(tmp_path / "labels.jsonl", [
        {"prompt": f"review {i}:", "completion": " positive", "answer": "positive"}
        for i in range(4)])
    free = write_jsonl(tmp_path / "free.jsonl", [
        {"prompt": f"say {i}:", "completion": f" hello {i}"} for i in range(4)])
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "t", "completion": " u"}])
    cfg = cfg_of({"source": str(train)},
                 {"test": {"source": str(hashed)}, "ood": {"source": str(labels)},
                  "test_noisy": {"source": str(hashed)}, "chat": {"source": str(free)}})
    sets = eval_sets(cfg)
    assert {k: (s.role, s.extractor, s.graded) for k, s in sets.items()} == {
        "test": ("test", "hash", True), "ood": ("ood", "first_line", True),
        "test_noisy": ("variant", "hash", True), "chat": ("extra", None, False)}
    assert isinstance(sets["test"], EvalSet) and sets["test"].examples[0].answer == "1"
    # an explicit extractor wins over inference; sets without answers stay ungraded
    sets = eval_sets(cfg, extractor="regex", answer_regex=r"=(\d+)")
    assert sets["test"].extractor == "regex" and sets["test"].answer_regex == r"=(\d+)"
    assert sets["chat"].extractor is None
    with pytest.raises(UserError, match="unknown answer extractor 'hsah'"):
        eval_sets(cfg, extractor="hsah")
    with pytest.raises(UserError, match="needs answer_regex"):
        eval_sets(cfg, extractor="regex")


def test_infer_extractor_rule():
    def exs(*completions, answer="1"):
        return [Example("p", c, answer=answer, id=str(i)) for i, c in enumerate(completions)]

    assert infer_extractor(exs("x\n#### 1", "y\n####1", "z")) == "hash"
    assert infer_extractor(exs("so \\boxed{1}", "\\boxed{2}", "#### 3")) == "boxed"
    assert infer_extractor(exs("yes", "#### 1")) == "first_line"  # not more than half
    assert infer_extractor(exs("a", "b", answer=None)) is None
    assert [role_of(n) for n in ("test", "ood", "test_x", "dev")] == [
        "test", "ood", "variant", "extra"]


def test_no_test_set_is_an_error_for_the_audit_and_a_warning_for_train(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl",
                        [{"prompt": f"p{i}", "completion": f" c{i}"} for i in range(5)])
    cfg = cfg_of({"source": str(train)}, {"dev": {"source": str(train)}})
    with pytest.raises(UserError) as e:
        eval_sets(cfg, config_source="run.yaml")
    assert str(e.value).startswith("run.yaml, field 'data.eval':") and "'test'" in str(e.value)
    warnings = check_eval_sets(cfg)
    assert any("no evaluation set named 'test'" in w for w in warnings)


def test_holdout_becomes_the_test_set(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": f" a{i}\n#### {i}", "answer": i} for i in range(40)]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    cfg = cfg_of({"source": str(data), "split": {"test": 0.15, "seed": 0}},
                 {"ood": {"source": str(data), "split": {"test": 0.15, "part": "test"}, "n": 2}})
    sets = eval_sets(cfg)
    test = sets["test"]
    assert test.role == "test" and test.extractor == "hash" and len(test.examples) == 6
    trained = train_sample(cfg, 1000)
    assert len(trained) == 34 and not {e.id for e in trained} & {e.id for e in test.examples}
    assert sets["ood"].examples == test.examples[:2]
    assert eval_sets(cfg)["test"].examples == test.examples  # deterministic
    assert check_eval_sets(cfg) == []  # disjoint: no overlap warning


def test_overlap_warning_counts(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": f" a{i}"} for i in range(10)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    partial = write_jsonl(tmp_path / "partial.jsonl",
                          rows[:3] + [{"prompt": "q3", "completion": " other"}]
                          + [{"prompt": f"new{i}", "completion": " x"} for i in range(4)])
    cfg = cfg_of({"source": str(train)}, {"test": {"source": str(train)},
                                          "ood": {"source": str(partial)}})
    warnings = check_eval_sets(cfg)
    assert len(warnings) == 2
    assert "eval set 'test' is the training data: all 10 examples" in warnings[0]
    assert "10 of 10 prompts" in warnings[0]
    assert "eval set 'ood' overlaps the training data: 3 of 8 examples" in warnings[1]
    assert "4 of 8 prompts" in warnings[1]


def test_partial_answers_and_extractor_mismatch_warn(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "t", "completion": " u"}])
    some = write_jsonl(tmp_path / "some.jsonl", [
        {"prompt": "a", "completion": " 1", "answer": 1}, {"prompt": "b", "completion": " 2"}])
    wordy = write_jsonl(tmp_path / "wordy.jsonl", [
        {"prompt": f"p{i}", "completion": f" The answer is {i}.", "answer": i}
        for i in range(3)])
    cfg = cfg_of({"source": str(train)}, {"test": {"source": str(wordy)},
                                          "dev": {"source": str(some)}})
    warnings = check_eval_sets(cfg)
    assert any("'test': the 'first_line' answer extractor finds the answer in only 0 of 3"
               in w for w in warnings)
    assert any("'dev': 1 of 2 examples have no answer" in w for w in warnings)


def test_bad_eval_sets_name_the_set_and_the_config(tmp_path):
    cfg = cfg_of({"source": "builtin:summarize", "n": 4},
                 {"test": {"source": "builtin:summarize", "split": "test", "n": 4},
                  "ood": {"source": "builtin:summarize", "split": "ood", "n": 4}})
    with pytest.raises(UserError) as e:
        check_eval_sets(cfg, config_source="run.yaml")
    assert str(e.value).startswith("run.yaml, field 'data.eval.ood.split': task 'summarize' "
                                   "has no split 'ood'")
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"question": "q", "completion": " c"}])
    for ev, field, msg in (
            ({"source": str(tmp_path / "missing.jsonl")}, "data.eval.test.source", "not found"),
            ({"source": str(rows), "fields": {"prompt": "q"}}, "data.eval.test.fields.prompt",
             "column 'q'"),
            ({"source": str(rows)}, "data.eval.test", "missing required field 'prompt'"),
            ({"source": "builtin:arith", "options": {"nope": 1}}, "data.eval.test.options",
             "no option 'nope'")):
        with pytest.raises(UserError) as e:
            check_eval_sets(cfg_of({"source": "builtin:arith", "n": 4}, {"test": ev}),
                            config_source="run.yaml")
        s = str(e.value)
        assert s.startswith(f"run.yaml, field '{field}'") and msg in s, s


# ---------------------------------------------------------------- through `finemem train`

def _write_cfg(path, **data):
    cfg = {"run_dir": data.pop("run_dir"), "model": "builtin:test", "device": "cpu",
           "data": {"max_length": 96, **data},
           "training": {"epochs": 1, "batch_size": 8, "lr": 1e-3}}
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.integration
def test_train_refuses_bad_eval_set_before_writing(tmp_path, monkeypatch, capsys):
    from finemem.cli import app, main

    run = tmp_path / "run"
    path = _write_cfg(tmp_path / "run.yaml", run_dir=str(run),
                      train={"source": "builtin:summarize", "n": 8},
                      eval={"test": {"source": "builtin:summarize", "split": "test", "n": 4},
                            "ood": {"source": "builtin:summarize", "split": "ood", "n": 4}})
    monkeypatch.setattr(sys, "argv", ["finemem", "train", "--config", str(path)])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "data.eval.ood" in err and str(path) in err and "no split 'ood'" in err
    assert not run.exists()
    r = CliRunner().invoke(app, ["train", "--config", str(path)])
    assert isinstance(r.exception, UserError) and not run.exists()


@pytest.mark.integration
def test_run_folder_holds_absolute_paths_and_rerun_resumes(tmp_path, monkeypatch):
    from finemem.cli import app

    monkeypatch.chdir(tmp_path)
    Path("data").mkdir()
    write_jsonl(Path("data/all.jsonl"), [
        {"prompt": f"Q: {i} plus 1?\nA:", "completion": f" {i + 1}", "answer": i + 1}
        for i in range(20)])
    _write_cfg(Path("run.yaml"), run_dir="run",
               train={"source": "data/all.jsonl", "split": {"test": 0.2, "seed": 0}},
               eval={"dup": {"source": "data/all.jsonl"}})
    runner = CliRunner()
    r = runner.invoke(app, ["train", "--config", "run.yaml", "--no-progress"])
    assert r.exit_code == 0, r.output
    # the 'dup' set is the whole file: the 16 trained examples overlap it
    assert "warning: eval set 'dup' overlaps the training data: 16 of 20" in r.output
    stored = yaml.safe_load(Path("run/config.yaml").read_text())
    assert stored["data"]["train"]["source"] == str(tmp_path / "data" / "all.jsonl")
    assert stored["data"]["eval"]["dup"]["source"] == str(tmp_path / "data" / "all.jsonl")
    assert stored["model"] == "builtin:test"
    # the stored config works from anywhere: its test set is the held-out 20%
    monkeypatch.chdir("/")
    from finemem.config import load_config

    sets = eval_sets(load_config(tmp_path / "run" / "config.yaml"))
    assert len(sets["test"].examples) == 4 and sets["test"].graded
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["train", "--config", "run.yaml", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "already complete" in r.output
    stored = yaml.safe_load(Path("run/config.yaml").read_text())
    assert stored["data"]["train"]["source"] == str(tmp_path / "data" / "all.jsonl")
