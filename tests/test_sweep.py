"""`finemem sweep` end to end on the test-size model: a grid over a config key, one run folder
per cell (a rerun resumes instead of retraining), a table, sweep.json and a learning-rate
recommendation."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from finemem.cli import app

pytestmark = pytest.mark.integration


def test_sweep_grid_over_learning_rates(tmp_path):
    cfg = {
        "run_dir": "unused", "model": "builtin:test",
        "data": {"train": {"source": "builtin:arith", "split": "train", "n": 32},
                 "eval": {"test": {"source": "builtin:arith", "split": "test", "n": 16}}},
        "training": {"epochs": 1, "batch_size": 16},
        "audit": {"likelihood": {"train_sample": 8},
                  "overmem": {"diversity_prompts": 0, "max_new_tokens": 8}},
    }
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "sweep"
    args = ["sweep", "--config", str(path), "--grid", "training.lr=1e-4,1e-3", "--out", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    cells = json.loads((out / "sweep.json").read_text())
    assert [c["values"] for c in cells] == [{"training.lr": 1e-4}, {"training.lr": 1e-3}]
    assert [c["name"] for c in cells] == ["lr-0.0001", "lr-0.001"]
    ckpt = out / "lr-0.001" / "checkpoints" / "step-000002"
    for c in cells:
        assert (out / c["name"] / "checkpoints" / "step-000002").is_dir()
        assert c["graded"] and 0.0 <= c["best_acc"] <= 1.0 and c["max_ppl_ratio"] >= 1.0
        assert c["recommended"].startswith("step-")
    assert "Learning-rate recommendation: lr=" in r.output
    assert "over-memorized from epoch" in r.output

    # a rerun resumes: the finished cells are neither retrained nor re-audited
    stamp = max(p.stat().st_mtime_ns for p in ckpt.iterdir())
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert max(p.stat().st_mtime_ns for p in ckpt.iterdir()) == stamp
    assert json.loads((out / "sweep.json").read_text()) == cells

    # --lrs is a shortcut for the same grid, so giving both is a conflict
    r = CliRunner().invoke(app, [*args, "--lrs", "1e-4"])
    assert r.exit_code != 0 and "gridded twice" in str(r.exception)
