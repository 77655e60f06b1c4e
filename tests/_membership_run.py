"""One small canary run shared by test_membership, test_canaries and test_trajectories (trained
once per test session): `builtin:test` on 24 arith problems plus random-token canaries at tiers
1 and 16 (10 each, 100 twins), 3 epochs; then `finemem canaries add`, `train`, `audit`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from typer.testing import CliRunner

from finemem.cli import app

runner = CliRunner()
_CACHE: dict[str, Path] = {}


def base_config(root: Path) -> dict:
    return {
        "run_dir": str(root / "run"), "model": "builtin:test",
        "data": {"train": {"source": "builtin:arith", "split": "train", "n": 24},
                 "eval": {"test": {"source": "builtin:arith", "split": "test", "n": 100}}},
        "training": {"epochs": 3, "lr": 3e-3, "batch_size": 16},
        "audit": {"likelihood": {"train_sample": 8},
                  "membership": {"members": 24, "nonmembers": 100, "n_boot": 200},
                  "canaries": {"n_boot": 200}},
    }


def canary_run() -> tuple[Path, dict]:
    """(run_dir, outputs of the commands): trained and audited once per process."""
    if "run" in _CACHE:
        return _CACHE["run"], _CACHE["out"]
    import torch

    # One thread: on a shared 2-core machine two spinning OpenMP threads make this tiny model
    # score ~30x slower (0.2 s vs 6 s per 100 examples measured with a load average of 6).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _build()
    finally:
        torch.set_num_threads(threads)


def _build() -> tuple[Path, dict]:
    root = Path(tempfile.mkdtemp(prefix="fm_canary_"))
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(base_config(root)))
    out = {}
    r = runner.invoke(app, ["canaries", "add", str(path), "--families", "random", "--tiers",
                            "1,16", "--per-tier", "10", "--twins", "100"])
    assert r.exit_code == 0, r.output
    out["add"] = r.output
    r = runner.invoke(app, ["train", "--config", str(path), "--no-progress"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["audit", str(root / "run"), "--probes", "membership,canaries",
                            "--quiet"])
    assert r.exit_code == 0, r.output
    out["audit"] = r.output
    _CACHE["run"], _CACHE["out"], _CACHE["config"] = root / "run", out, path
    return root / "run", out


def config_path() -> Path:
    canary_run()
    return _CACHE["config"]
