"""`finemem sweep` end to end on the test-size model: one run folder per cell, a table, and a
learning-rate recommendation."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from finemem.cli import app

pytestmark = pytest.mark.integration


def test_sweep_two_learning_rates(tmp_path):
    cfg = {
        "run_dir": "unused", "model": "builtin:test",
        "data": {"train": {"source": "builtin:arith", "split": "train", "n": 32},
                 "eval": {"test": {"source": "builtin:arith", "split": "test", "n": 16}}},
        "training": {"epochs": 1, "batch_size": 16},
        "audit": {"train_sample": 8, "diversity_prompts": 0, "max_new_tokens": 8},
    }
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "sweep"
    r = CliRunner().invoke(app, ["sweep", "--config", str(path), "--lrs", "1e-4,1e-3",
                                 "--methods", "full", "--out", str(out)])
    assert r.exit_code == 0, r.output
    cells = json.loads((out / "sweep.json").read_text())
    assert [(c["method"], c["lr"]) for c in cells] == [("full", 1e-4), ("full", 1e-3)]
    for c in cells:
        assert (out / f"full-lr{c['lr']:g}" / "checkpoints" / "step-000002").is_dir()
        assert 0.0 <= c["best_acc"] <= 1.0 and c["max_ppl_ratio"] >= 1.0
    assert "Learning-rate recommendation" in r.output
