"""Bad input, table-driven: configs, datasets, model paths, CLI flags and run folders.

Each case runs `finemem ...` the way the console script does (`finemem.cli.main()` with that
argv) and checks: exit status 2, no traceback, exactly one line besides warnings, naming what
is wrong and where (the expected fragments), and no file created or changed (every file
under the case's folder hashed before and after; the run fixtures are copied into it first).
The one exception is named in its case: a disk that fills up during a checkpoint write (of a
resumed run) may add train-log rows to the results store, which a rerun overwrites with the
same values, and rewrites distributed.json (the layout of the latest launch); checkpoints/,
state/ and every other file stay as they were, so the rerun resumes from the same point.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml

pytestmark = pytest.mark.integration


@dataclass
class Case:
    name: str
    setup: Callable  # (case folder, fixtures) -> argv (paths inside the case folder)
    expect: tuple[str, ...]  # fragments of the one error line
    skip_files: tuple[str, ...] = ()  # file names left out of the before/after hash


# -------------------------------------------------------------------- fixtures and helpers
def base_cfg(root: Path, **over) -> dict:
    cfg = {"run_dir": str(root / "run"), "model": "builtin:test", "device": "cpu",
           "data": {"train": {"source": "builtin:arith", "n": 8},
                    "eval": {"test": {"source": "builtin:arith", "split": "test", "n": 4}}},
           "training": {"max_steps": 2, "batch_size": 4, "lr": 1e-3, "save_every": 1}}
    for k, v in over.items():
        d = cfg
        keys = k.split(".")
        for key in keys[:-1]:
            d = d.setdefault(key, {})
        d[keys[-1]] = v
    return cfg


def write_cfg(root: Path, cfg: dict | str, name: str = "run.yaml") -> str:
    p = root / name
    p.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg), encoding="utf-8")
    return str(p)


def jsonl(root: Path, rows, name: str = "data.jsonl") -> str:
    p = root / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
                 encoding="utf-8")
    return str(p)


ROWS = [{"prompt": f"Q: {i} plus 1?\nA:", "completion": f" {i + 1}", "id": f"r{i}"}
        for i in range(8)]


def train_on(root: Path, source: str, **over) -> list[str]:
    cfg = base_cfg(root, **{"data.train": {"source": source}, **over})
    return ["train", "--config", write_cfg(root, cfg), "--no-progress"]


def copy_run(fx, key: str, root: Path) -> Path:
    dst = root / key
    shutil.copytree(fx[key], dst)
    return dst


def folder_hash(root: Path, skip: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if any(part in skip for part in p.relative_to(root).parts):
            continue
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def run_cli(argv: list[str], monkeypatch, capsys, cwd: Path) -> tuple[int, str]:
    from finemem.cli import main

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["finemem", *argv])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # any other exception is a traceback: the test fails
        main()
    out = capsys.readouterr()
    return e.value.code, out.out + out.err


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """Shared, never modified: the test base model folder, a trained full run, a LoRA run,
    and a LoRA run on another base model."""
    from test_train_e2e import make_model_dir

    from finemem.config import parse_config
    from finemem.models.load import resolve_model
    from finemem.train import train

    root = tmp_path_factory.mktemp("bad_inputs_fx")
    out = {"base": Path(resolve_model("builtin:test"))}
    for key, over in {"full": {}, "lora": {"training.method": "lora",
                                           "training.max_steps": 1}}.items():
        cfg = base_cfg(root, run_dir=str(root / key), **over)
        train(parse_config(cfg), progress=False)
        out[key] = root / key
    other = make_model_dir(root)
    cfg = base_cfg(root, run_dir=str(root / "other"), model=str(other),
                   **{"training.method": "lora", "training.max_steps": 1,
                      "data.max_length": 64})
    train(parse_config(cfg), progress=False)
    out["other"] = root / "other"
    return out


# -------------------------------------------------------------------- the cases
def _config_text(text: str):
    return lambda root, fx: ["train", "--config", write_cfg(root, text)]


def _config_bytes(data: bytes):
    def setup(root, fx):
        (root / "c.yaml").write_bytes(data)
        return ["train", "--config", str(root / "c.yaml")]
    return setup


def _config(**over):
    return lambda root, fx: ["train", "--config", write_cfg(root, base_cfg(root, **over))]


def _data(rows_or_bytes, name="data.jsonl", **over):
    def setup(root, fx):
        if isinstance(rows_or_bytes, bytes):
            (root / name).write_bytes(rows_or_bytes)
            src = str(root / name)
        else:
            src = jsonl(root, rows_or_bytes, name)
        return train_on(root, src, **over)
    return setup


def _long_line(root, fx):
    p = root / "big.jsonl"
    with p.open("w") as f:  # one 50 MB line, no newline anywhere
        f.write('{"prompt": "' + "x" * (50 << 20) + '", "completion": " y"}')
    return train_on(root, str(p))


def _model_dir(drop: tuple[str, ...] = (), add: dict | None = None):
    def setup(root, fx):
        m = root / "model"
        shutil.copytree(fx["base"], m)
        for pattern in drop:
            for f in m.glob(pattern):
                f.unlink()
        for name, data in (add or {}).items():
            (m / name).write_bytes(data)
        return ["train", "--config", write_cfg(root, base_cfg(root, model=str(m)))]
    return setup


def _truncated_checkpoint(root, fx):
    run = copy_run(fx, "full", root)
    w = run / "checkpoints" / "step-000002" / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    return ["audit", str(run), "--device", "cpu"]


def _foreign_adapter(root, fx):
    run = copy_run(fx, "lora", root)
    dst = run / "checkpoints" / "step-000001"
    shutil.rmtree(dst)
    shutil.copytree(fx["other"] / "checkpoints" / "step-000001", dst)
    return ["audit", str(run), "--device", "cpu"]


def _other_config(root, fx):
    run = copy_run(fx, "full", root)
    cfg = base_cfg(root, run_dir=str(run), **{"training.lr": 5e-4})
    return ["train", "--config", write_cfg(root, cfg), "--no-progress"]


def _foreign_folder(root, fx):
    (root / "run").mkdir()
    (root / "run" / "notes.txt").write_text("mine")
    return ["train", "--config", write_cfg(root, base_cfg(root))]


def _audit(*args, run="full"):
    def setup(root, fx):
        return ["audit", str(copy_run(fx, run, root)), "--device", "cpu", *args]
    return setup


def _recommend_unaudited(root, fx):
    return ["recommend", str(copy_run(fx, "full", root))]


def _train_flags(*flags):
    return lambda root, fx: ["train", "--config", write_cfg(root, base_cfg(root)), *flags]


def _too_long_for_context(root, fx):
    rows = [*ROWS, {"prompt": "Q: " + " ".join(f"w{j}" for j in range(400)) + "\nA:",
                    "completion": " long", "id": "long"}]
    # the user's own max_length, longer than the context (unset, it would follow the context)
    return train_on(root, jsonl(root, rows), **{"data.max_length": 512})


def _disk_full(root, fx):
    """A resumable run (checkpoints up to step 3 of 4) whose next checkpoint write hits
    ENOSPC (the `ckpt_write` fault point raising OSError)."""
    from finemem import faults
    from finemem.config import load_config
    from finemem.train import train
    from finemem.train.loop import CRASH_ENV, SimulatedCrash

    path = write_cfg(root, base_cfg(root, run_dir=str(root / "run4"),
                                    **{"training.max_steps": 4}), "run4.yaml")
    os.environ[CRASH_ENV] = "3"
    try:
        with pytest.raises(SimulatedCrash):
            train(load_config(path), progress=False)
    finally:
        del os.environ[CRASH_ENV]
    faults._FAIL, faults._ACTIVE, faults._seen = {"ckpt_write": 1}, True, {}
    return ["train", "--config", path, "--no-progress"]


def _nonmembers_overlap(root, fx):
    from finemem.config import DataSource
    from finemem.data.loaders import load_examples

    run = copy_run(fx, "full", root)
    exs = load_examples(DataSource(source="builtin:arith", n=8))
    src = jsonl(root, [{"prompt": e.prompt, "completion": e.completion, "id": f"n{i}"}
                       for i, e in enumerate(exs)], "nonmembers.jsonl")
    from finemem.audit.probes import probe_names

    probe = "membership" if "membership" in probe_names() else "extraction"
    return ["audit", str(run), "--device", "cpu", "--probes", probe,
            "--set", f"audit.nonmembers.source={src}"]


def _prefix_too_long(root, fx):
    run = copy_run(fx, "full", root)
    return ["audit", str(run), "--device", "cpu", "--probes", "extraction", "--set",
            "audit.extraction.prefix_tokens=500"]


CASES = [
    # configs
    Case("malformed YAML", _config_text("run_dir: r\ntraining: {epochs: 3\n"),
         ("run.yaml", "invalid YAML")),
    Case("unknown top-level key", _config(trainig={"epochs": 3}),
         ("run.yaml", "trainig", "unknown key")),
    Case("unknown nested key", _config(**{"training.lrr": 0.1}),
         ("training.lrr", "unknown key")),
    Case("out-of-range lr", _config(**{"training.lr": 0}), ("training.lr", "greater than 0")),
    Case("out-of-range duplication", _config(**{"data.duplication": {"fraction": 1.5}}),
         ("data.duplication.fraction",)),
    Case("wrongly typed epochs", _config(**{"training.epochs": "three"}),
         ("training.epochs", "integer")),
    Case("missing required key", _config_text("model: builtin:test\n"),
         ("run.yaml", "missing required key")),
    Case("empty config file", _config_text(""), ("run.yaml", "missing required key")),
    Case("config is a list", _config_text("- a\n- b\n"), ("run.yaml", "mapping")),
    Case("config file not found", lambda root, fx: ["train", "--config", str(root / "no.yaml")],
         ("no.yaml", "not found")),
    Case("non-UTF-8 config", _config_bytes(b"run_dir: \xff\xfe\n"), ("c.yaml", "not UTF-8")),
    Case("unknown probe in the config", _config(**{"audit.probes": ["overmen"]}),
         ("audit.probes", "unknown probe")),
    # datasets
    Case("broken JSONL line", _data([ROWS[0], '{"prompt": "a", "completion":', ROWS[1]]),
         ("data.jsonl", "row 2", "not valid JSON")),
    Case("missing field", _data([ROWS[0], {"prompt": "only a prompt", "id": "x"}]),
         ("data.jsonl", "row 2", "completion")),
    Case("wrongly typed field", _data([ROWS[0], {"prompt": 7, "completion": " 8", "id": "y"}]),
         ("row 2", "prompt must be a string")),
    Case("empty data file", _data(b""), ("data.jsonl", "no examples")),
    Case("non-UTF-8 data file",
         _data(json.dumps(ROWS[0]).encode() + b"\n" + b'{"prompt": "\xff"}\n'),
         ("data.jsonl", "row 2", "not UTF-8")),
    Case("a 50 MB single line", _long_line, ("big.jsonl", "row 1", "MB")),
    Case("data file not found", lambda root, fx: train_on(root, str(root / "nope.jsonl")),
         ("nope.jsonl", "not found")),
    Case("unknown file type", _data(b"a,b\n", name="data.txt"), ("data.txt", "unknown file type")),
    Case("field mapped to an absent column",
         _data(ROWS, **{"data.train.fields": {"prompt": "question"}}),
         ("fields.prompt", "question")),
    Case("duplicate ids", _data([ROWS[0], ROWS[0]]), ("row 2", "duplicate id")),
    Case("row longer than the model's context", _too_long_for_context,
         ("data.max_length", "context of 256")),
    # model paths
    Case("model folder not found", _config(model="./no-such-model"),
         ("no-such-model", "not found")),
    Case("model folder without config.json", _model_dir(drop=("config.json",)),
         ("model", "config.json")),
    Case("missing tokenizer", _model_dir(drop=("tokenizer*",)), ("model", "no tokenizer")),
    Case("truncated safetensors in a checkpoint folder", _truncated_checkpoint,
         ("step-000002", "model.safetensors")),
    Case("LoRA adapter made for another base model", _foreign_adapter,
         ("step-000001", "base model")),
    # run folders
    Case("run folder from another config", _other_config, ("different config", "--force")),
    Case("non-empty folder that is not a run", _foreign_folder, ("not a finemem run",)),
    Case("audit of a folder that is not a run",
         lambda root, fx: ["audit", str(root), "--device", "cpu"], ("not a finemem run",)),
    Case("recommend before any audit", _recommend_unaudited, ("no audited checkpoints",)),
    Case("disk full during a checkpoint write", _disk_full, ("disk full", "rerun"),
         skip_files=("results.sqlite", "results.sqlite-wal", "results.sqlite-shm",
                     "distributed.json")),  # the launch's layout, rewritten by every resume
    # CLI flags
    Case("--set without '='", _train_flags("--set", "training.epochs"),
         ("--set", "key=value")),
    Case("--set value that is not YAML", _train_flags("--set", "training.epochs=[1"),
         ("training.epochs", "cannot parse")),
    Case("--lr out of range", _train_flags("--lr", "-1"), ("training.lr",)),
    Case("--method unknown", _train_flags("--method", "adam"), ("training.method",)),
    Case("--max-steps 0", _train_flags("--max-steps", "0"), ("training.max_steps",)),
    Case("missing --config", lambda root, fx: ["train"], ("--config",)),
    Case("unknown flag", _train_flags("--learning-rate", "3"), ("--learning-rate",)),
    Case("--probes unknown", _audit("--probes", "overmen"), ("Unknown probe 'overmen'",
                                                             "overmem")),
    Case("audit --set outside audit.*", _audit("--set", "training.lr=1"),
         ("--set", "audit.*")),
    Case("audit --workers 0", _audit("--workers", "0"), ("workers",)),
    Case("audit --device unknown", _audit("--device", "tpu"), ("device", "tpu")),
    Case("non-members that overlap members", _nonmembers_overlap,
         ("nonmembers", "also training examples")),
    Case("a prefix longer than the examples", _prefix_too_long,
         ("audit.extraction.prefix_tokens",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, fx, tmp_path, monkeypatch,
                                                           capsys):
    from finemem import faults

    monkeypatch.setattr(faults, "_FAIL", {})
    monkeypatch.setattr(faults, "_ACTIVE", faults._ACTIVE)
    monkeypatch.setattr(faults, "_seen", {})
    argv = case.setup(tmp_path, fx)
    before = folder_hash(tmp_path, case.skip_files)
    code, out = run_cli(argv, monkeypatch, capsys, tmp_path)
    lines = [ln for ln in out.strip().splitlines() if ln.strip()
             and not ln.startswith("warning:")]
    assert "Traceback" not in out
    assert code == 2, out
    assert len(lines) == 1, out
    assert lines[0].startswith("error:"), out
    print(f"\n{case.name}: {lines[0]}")
    for frag in case.expect:
        assert frag in lines[0], (frag, lines[0])
    assert folder_hash(tmp_path, case.skip_files) == before
    assert not list(tmp_path.rglob(".tmp-*")) and not list(tmp_path.rglob("state.tmp"))


def test_the_table_has_at_least_30_cases():
    assert len(CASES) >= 30
