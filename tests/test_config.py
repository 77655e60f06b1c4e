"""Configs: shipped YAML validates; bad keys and values give one line naming file, row, field."""

import subprocess
import sys
from importlib import resources

import pytest
import yaml

from finemem.config import load_config, parse_config
from finemem.errors import UserError

GOOD = """run_dir: runs/x
model: builtin:test
data:
  train:
    source: builtin:arith
training:
  lr: 0.001
  epochs: 2
"""


def write(tmp_path, text, name="run.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_example_config_validates_and_is_commented():
    text = resources.files("finemem.configs").joinpath("example.yaml").read_text()
    cfg = parse_config(yaml.safe_load(text), text=text)
    assert cfg.training.method == "full"
    # every top-level section and most keys carry a comment explaining them
    lines = [ln for ln in text.splitlines() if ":" in ln and not ln.lstrip().startswith("#")]
    assert sum("#" in ln for ln in lines) / len(lines) > 0.8


@pytest.mark.parametrize("text,row,field,msg", [
    (GOOD + "  lrr: 1\n", 9, "training.lrr", "unknown key"),
    (GOOD.replace("  lr: 0.001", "  lr: fast"), 7, "training.lr", "valid number"),
    (GOOD.replace("  lr: 0.001", "  lr: 0"), 7, "training.lr", "greater than 0"),
    (GOOD.replace("  epochs: 2", "  epochs: 0"), 8, "training.epochs", "greater than 0"),
    (GOOD.replace("run_dir: runs/x\n", ""), None, "run_dir", "missing required key"),
    (GOOD.replace("    source: builtin:arith", "    split: train"), 4, "data.train.source",
     "missing required key"),
])
def test_bad_config_names_row_and_field(tmp_path, text, row, field, msg):
    p = write(tmp_path, text)
    with pytest.raises(UserError) as e:
        load_config(p)
    s = str(e.value)
    assert s.startswith(str(p)) and f"field '{field}'" in s and msg in s
    if row is not None:
        assert f"row {row}" in s


def test_overrides_beat_the_file(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), overrides={"training.lr": 0.5,
                                                         "training.method": "lora"})
    assert cfg.training.lr == 0.5 and cfg.training.method == "lora"


def test_not_utf8_and_not_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_bytes(b"run_dir: \xff\xfe\n")
    with pytest.raises(UserError, match="not UTF-8"):
        load_config(p)
    with pytest.raises(UserError, match="row 2"):
        load_config(write(tmp_path, "a: 1\n b: [\n"))


def test_cli_bad_config_exit_2_one_line(tmp_path):
    p = write(tmp_path, GOOD.replace("  lr: 0.001", "  lr: -1"))
    r = subprocess.run([sys.executable, "-m", "finemem.cli", "train", "--config", str(p)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "training.lr" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()


def test_config_example_cli_prints_valid_yaml():
    r = subprocess.run([sys.executable, "-m", "finemem.cli", "config", "example"],
                       capture_output=True, text=True)
    assert r.returncode == 0
    parse_config(yaml.safe_load(r.stdout))


def test_set_null_override_and_eval_sets_do_not_change_digest(tmp_path):
    p = write(tmp_path, GOOD.replace("  epochs: 2", "  epochs: 2\n  max_steps: 5"))
    assert load_config(p).training.max_steps == 5
    assert load_config(p, overrides={"training.max_steps": None}).training.max_steps is None
    a = load_config(p)
    b = load_config(p, overrides={"data.eval": {"test": {"source": "builtin:arith",
                                                         "split": "test"}}})
    assert a.digest() == b.digest()
    assert a.digest() != load_config(p, overrides={"training.lr": 0.1}).digest()


def test_holdout_split_parses_and_bad_values_name_the_field(tmp_path):
    text = GOOD.replace("    source: builtin:arith",
                        "    source: data.jsonl\n    split: {test: 0.15, seed: 3}")
    cfg = load_config(write(tmp_path, text))
    hold = cfg.data.train.split
    assert (hold.test, hold.seed, hold.part) == (0.15, 3, "train")
    assert load_config(write(tmp_path, GOOD)).data.train.split == "train"
    for bad, field, msg in (("{test: 1.5}", "data.train.split.test", "less than 1"),
                            ("{test: 0.1, part: dev}", "data.train.split.part", "'train' or"),
                            ("{tst: 0.1}", "data.train.split.test", "missing required key")):
        p = write(tmp_path, GOOD.replace("    source: builtin:arith",
                                         f"    source: data.jsonl\n    split: {bad}"))
        with pytest.raises(UserError) as e:
            load_config(p)
        assert f"field '{field}'" in str(e.value) and msg in str(e.value), str(e.value)


def test_resolved_makes_local_paths_absolute_only(tmp_path, monkeypatch):
    from finemem.train.setup import run_dir_state, write_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    raw = {"run_dir": "run", "model": "model",
           "data": {"train": {"source": "data/train.jsonl"},
                    "eval": {"test": {"source": "./test.csv"},
                             "hub": {"source": "someone/dataset"},
                             "task": {"source": "builtin:arith", "split": "test"}}}}
    cfg = parse_config(raw)
    r = cfg.resolved()
    assert r.model == str(tmp_path / "model")
    assert r.data.train.source == str(tmp_path / "data" / "train.jsonl")
    assert r.data.eval["test"].source == str(tmp_path / "test.csv")
    assert r.data.eval["hub"].source == "someone/dataset"
    assert r.data.eval["task"].source == "builtin:arith"
    assert parse_config({**raw, "model": "org/model"}).resolved().model == "org/model"
    assert r.resolved() == r  # idempotent
    # a run folder whose config.yaml holds the resolved paths is "same" for the config as
    # written, from the same directory
    (tmp_path / "run").mkdir()
    write_config(tmp_path / "run", r)
    assert run_dir_state(tmp_path / "run", cfg) == "same"
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    assert run_dir_state(tmp_path / "run", cfg) == "different"  # other data files


def _paths(model, prefix=""):
    """Every settable key of a config model, dotted, walking its sub-models (and each probe's
    section under audit)."""
    import typing

    from pydantic import BaseModel

    from finemem.audit.probes import PROBES, load_probes
    from finemem.config import AuditConfig

    out = []
    for name, f in model.model_fields.items():
        out.append(prefix + name)
        sub = next((t for t in (f.annotation, *typing.get_args(f.annotation))
                    if isinstance(t, type) and issubclass(t, BaseModel)), None)
        if sub is not None and typing.get_origin(f.annotation) is not dict:
            out += _paths(sub, f"{prefix}{name}.")
    if model is AuditConfig:
        load_probes()
        for n, p in PROBES.items():
            out += [f"{prefix}{n}"] + _paths(p.Config, f"{prefix}{n}.")
    return out


def _has(d, dotted):
    for k in dotted.split("."):
        if not isinstance(d, dict) or k not in d:
            return False
        d = d[k]
    return True


def test_example_config_has_every_key_of_the_models():
    """`finemem config example` is generated from the models: every field (probe sections
    included) is in it, with its description; optional sections are shown commented ('#: ')
    and switched on in the full form."""
    from finemem.cli.config_example import example_yaml
    from finemem.config import RunConfig

    full = yaml.safe_load(example_yaml(full=True))
    missing = [p for p in _paths(RunConfig) if not _has(full, p)]
    assert not missing, missing
    text = example_yaml()
    parse_config(yaml.safe_load(text), text=text)
    for key in ("stop_after_overmemorized", "report_to", "membership", "canaries", "relaxed",
                "attention", "extraction", "rmia_a"):
        assert f"{key}:" in text


def test_checked_in_example_is_the_generated_one():
    from finemem.cli.config_example import example_yaml

    text = resources.files("finemem.configs").joinpath("example.yaml").read_text()
    assert text == example_yaml(), "regenerate: finemem config example > finemem/configs/example.yaml"
