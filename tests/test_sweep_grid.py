"""`finemem sweep` over methods, LoRA rank / alpha, model size and duplication: the shortcut
flags, grids that would make zero cells (one line, exit 2), duplication without a fraction,
and resume after an interruption (finished cells are neither retrained nor re-audited)."""

import json
import subprocess
import sys

import pytest
import yaml

from finemem.errors import UserError
from finemem.experiments.sweep import parse_grid, run_sweep, shortcut_specs, sweep_configs

BASE = {"run_dir": "unused", "model": "builtin:test",
        "data": {"train": {"source": "builtin:arith", "split": "train", "n": 16},
                 "eval": {"test": {"source": "builtin:arith", "split": "test", "n": 8}}},
        "training": {"epochs": 1, "batch_size": 8},
        "audit": {"likelihood": {"train_sample": 4}}}


@pytest.fixture
def config(tmp_path):
    p = tmp_path / "base.yaml"
    p.write_text(yaml.safe_dump(BASE))
    return p


def test_shortcuts_grid_methods_ranks_sizes_and_duplication(config, tmp_path):
    specs = shortcut_specs(methods="full,lora", ranks="8,64", alphas=None, sizes="test,tiny",
                           models=None, duplication="1,4")
    grid = parse_grid(specs)
    assert grid == {"training.method": ["full", "lora"], "training.lora.r": [8, 64],
                    "model": ["builtin:test", "builtin:tiny"], "data.duplication.times": [1, 4]}
    over = dict(BASE, data={**BASE["data"], "duplication": {"fraction": 0.25, "seed": 1}})
    config.write_text(yaml.safe_dump(over))
    cells = sweep_configs(config, grid, tmp_path / "sw")
    assert len(cells) == 16
    name, values, cfg = cells[-1]
    assert name == "method-lora_r-64_model-builtin-tiny_times-4"
    assert cfg.training.lora.r == 64 and cfg.model == "builtin:tiny"
    assert cfg.data.duplication.times == 4 and cfg.data.duplication.fraction == 0.25


@pytest.mark.parametrize("flags,msg", [
    ({"lrs": ""}, "--lrs gives no values"), ({"duplication": " , "}, "zero cells"),
])
def test_empty_shortcut_is_zero_cells(flags, msg):
    with pytest.raises(UserError, match=msg):
        shortcut_specs(**flags)


def test_zero_cells_and_useless_duplication_refused(config, tmp_path):
    with pytest.raises(UserError, match="zero cells"):
        sweep_configs(config, {"training.lr": []}, tmp_path / "sw")
    with pytest.raises(UserError, match="data.duplication.fraction"):
        sweep_configs(config, parse_grid(["data.duplication.times=1,16"]), tmp_path / "sw")


def test_cli_zero_cells_one_line_exit_2(config, tmp_path):
    from typer.testing import CliRunner

    from finemem.cli import app

    base = ["sweep", "--config", str(config), "--out", str(tmp_path / "sw")]
    p = subprocess.run([sys.executable, "-m", "finemem", *base, "--lrs", ""],
                       capture_output=True, text=True, timeout=120)
    err = p.stderr.strip()
    assert p.returncode == 2 and err.startswith("error:") and len(err.splitlines()) == 1, err
    assert "zero cells" in err
    for args in (["--grid", "training.lr="], ["--duplication", "4"], ["--ranks", ","]):
        r = CliRunner().invoke(app, [*base, *args])   # main() prints these as one line, exit 2
        assert isinstance(r.exception, UserError) and "\n" not in str(r.exception), r.output
    assert not (tmp_path / "sw").exists()              # refused before anything is written


@pytest.mark.integration
def test_sweep_resumes_after_an_interruption(config, tmp_path, monkeypatch):
    import torch

    import finemem.audit as audit

    torch.set_num_threads(1)
    out = tmp_path / "sw"
    grid = parse_grid(["training.method=full,head"])
    real = audit.audit_run
    calls = []

    def interrupted(run_dir, **kw):  # Ctrl-C while the second cell is audited
        calls.append(run_dir)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(run_dir, **kw)

    monkeypatch.setattr(audit, "audit_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(config, grid=grid, out=out, probes=["likelihood"])
    done = json.loads((out / "sweep.json").read_text())
    assert [c["name"] for c in done] == ["method-full"]       # what finished is listed
    first = out / "method-full" / "checkpoints"
    stamp = max(p.stat().st_mtime_ns for p in first.rglob("*"))

    import finemem.audit.loop as loop

    audited = []
    real_loop = loop._loop
    monkeypatch.setattr(audit, "audit_run", real)
    monkeypatch.setattr(loop, "_loop", lambda ctx, refs, *a, **k: (
        audited.append((ctx.run_dir.name, [r.name for r in refs])), real_loop(ctx, refs, *a, **k)))
    cells = run_sweep(config, grid=grid, out=out, probes=["likelihood"])
    assert [c.name for c in cells] == ["method-full", "method-head"]
    assert max(p.stat().st_mtime_ns for p in first.rglob("*")) == stamp   # not retrained
    assert [name for name, _ in audited] == ["method-head"]               # not re-audited
    assert len(json.loads((out / "sweep.json").read_text())) == 2
