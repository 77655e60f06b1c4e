"""Defaults that fit the run: data.max_length follows the model's context (capped at 512), the
extraction probe's P / S fit the probed texts, and every error that suggests a value suggests
one that works (the test applies it and the command passes)."""

import re

import pytest
import yaml
from typer.testing import CliRunner

from finemem.cli import app

runner = CliRunner()


def test_max_length_for():
    from finemem.models.load import max_length_for

    assert max_length_for(None, 256) == 256
    assert max_length_for(None, 2048) == 512
    assert max_length_for(None, None) == 512
    assert max_length_for(96, 256) == 96
    assert max_length_for(1024, 256) == 1024  # the user's own value is kept (and refused later)


def test_unset_max_length_keeps_the_digest_of_runs_written_with_512():
    from finemem.config import parse_config

    raw = {"run_dir": "r", "data": {"train": {"source": "builtin:arith"}}}
    unset = parse_config(raw)
    assert unset.data.max_length is None
    assert unset.digest() == parse_config({**raw, "data": {**raw["data"], "max_length": 512}}
                                          ).digest()


def test_fit_cut():
    from finemem.audit.probes.extraction import fit_cut

    assert fit_cut([300] * 10) == (50, 50)  # long texts: the paper's 50 + 50
    assert fit_cut([11] * 10) == (6, 5)      # short answers: shared, S = half
    assert fit_cut([11] * 10, prefix=0) == (0, 11)
    assert fit_cut([11] * 10, suffix=8) == (3, 8)
    assert fit_cut([40, 60, 80, 100, 120] * 2) == (20, 20)  # the 10th percentile: 40
    p, s = fit_cut([1] * 5)
    assert (p, s) == (0, 1)
    # the loss on the completion: a short completion is extracted whole from its prompt
    assert fit_cut([11] * 10, prompt_context=True) == (0, 11)
    assert fit_cut([45] * 10, prompt_context=True) == (23, 22)


def test_doctests_of_the_fitting_functions():
    import doctest

    from finemem.audit.probes import extraction
    from finemem.models import load

    for mod in (extraction, load):
        failed, tried = doctest.testmod(mod)
        assert tried and not failed, mod.__name__


def _write(root, name, cfg):
    path = root / name
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _tasks():
    from finemem.data.tasks import task_names

    return task_names()


@pytest.mark.integration
@pytest.mark.parametrize("task", _tasks())
def test_builtin_test_model_trains_every_builtin_task_without_max_length(tmp_path, task):
    cfg = {"run_dir": str(tmp_path / "run"), "model": "builtin:test", "device": "cpu",
           "data": {"train": {"source": f"builtin:{task}", "split": "train", "n": 4}},
           "training": {"max_steps": 1, "batch_size": 4, "lr": 1e-3}}
    r = runner.invoke(app, ["train", "--config", _write(tmp_path, "run.yaml", cfg),
                            "--no-progress", "--quiet"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "checkpoints" / "step-000001").is_dir()


@pytest.mark.integration
def test_too_long_max_length_error_suggests_a_value_that_works(tmp_path):
    from finemem.errors import UserError

    cfg = {"run_dir": str(tmp_path / "run"), "model": "builtin:test", "device": "cpu",
           "data": {"train": {"source": "builtin:summarize", "split": "train", "n": 4},
                    "max_length": 512},
           "training": {"max_steps": 1, "batch_size": 4, "lr": 1e-3}}
    path = _write(tmp_path, "run.yaml", cfg)
    r = runner.invoke(app, ["train", "--config", path, "--no-progress"])
    assert isinstance(r.exception, UserError), r.output
    suggested = int(re.search(r"set data\.max_length: (\d+)", str(r.exception)).group(1))
    assert not (tmp_path / "run").exists()  # nothing half-written
    r = runner.invoke(app, ["train", "--config", path, "--no-progress",
                            "--set", f"data.max_length={suggested}"])
    assert r.exit_code == 0, r.output


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory):
    """A builtin:qa run with the loss on the completion (the default): short answers."""
    root = tmp_path_factory.mktemp("qa")
    cfg = {"run_dir": str(root / "run"), "model": "builtin:test", "device": "cpu",
           "data": {"train": {"source": "builtin:qa", "split": "train", "n": 16},
                    "eval": {"test": {"source": "builtin:qa", "split": "test", "n": 16}}},
           "training": {"epochs": 1, "lr": 3e-3, "batch_size": 8}}
    r = runner.invoke(app, ["train", "--config", _write(root, "run.yaml", cfg),
                            "--no-progress"])
    assert r.exit_code == 0, r.output
    return root / "run"


SMALL = ["--set", "audit.extraction.members=16", "--set", "audit.extraction.nonmembers=16"]


@pytest.mark.integration
def test_extraction_defaults_fit_short_answers_and_say_so(qa_run):
    from finemem.report.extraction_table import audited_cut

    r = runner.invoke(app, ["audit", str(qa_run), "--probes", "extraction", "--no-progress",
                            "--checkpoints", "last", *SMALL])
    assert r.exit_code == 0, r.output
    cut = audited_cut(qa_run)
    assert cut["prefix_tokens"] + cut["suffix_tokens"] < 100
    assert f"suffix S = {cut['suffix_tokens']} tokens" in r.output
    assert "do not fit" in r.output  # why they are not the paper's 50 + 50
    assert f"exact {cut['suffix_tokens']}-token suffix" in r.output  # the table says S


@pytest.mark.integration
def test_extraction_error_suggests_values_that_work(qa_run):
    from finemem.errors import UserError

    too_long = ["--set", "audit.extraction.prefix_tokens=50",
                "--set", "audit.extraction.suffix_tokens=50"]
    r = runner.invoke(app, ["audit", str(qa_run), "--probes", "extraction", "--no-progress",
                            "--checkpoints", "last", *SMALL, *too_long])
    assert isinstance(r.exception, UserError), r.output
    sets = re.findall(r"--set (audit\.extraction\.\w+=\d+)", str(r.exception))
    assert len(sets) == 2, str(r.exception)
    r = runner.invoke(app, ["audit", str(qa_run), "--probes", "extraction", "--no-progress",
                            "--checkpoints", "last", *SMALL,
                            *[a for s in sets for a in ("--set", s)]])
    assert r.exit_code == 0, r.output
