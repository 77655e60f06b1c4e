"""End-to-end training on a tiny random Llama in a local HF folder (any local folder works),
plus one run on builtin:test: layout, checkpoint contents, exact resume, --force, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from finemem.config import parse_config
from finemem.errors import UserError
from finemem.store import Store
from finemem.train import checkpoint as ck
from finemem.train import train
from finemem.train.loop import CRASH_ENV, SimulatedCrash

pytestmark = pytest.mark.integration
N_ROWS = 60


def make_model_dir(root: Path) -> Path:
    """A byte-level BPE tokenizer and a 2-layer random Llama saved as a normal HF folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = [f"Q: what is {a} plus {b}?\nA: {a} plus {b} is {a + b}." for a in range(12)
             for b in range(5)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<bos>", "<eos>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>")
    out = root / "tiny-llama"
    fast.save_pretrained(str(out))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=128, tie_word_embeddings=True, bos_token_id=0,
                      eos_token_id=1, pad_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_assets")
    model = make_model_dir(root)
    data = root / "train.jsonl"
    with data.open("w") as f:
        for i in range(N_ROWS):
            a, b = i % 12, i // 12
            f.write(json.dumps({"prompt": f"Q: what is {a} plus {b}?\nA:",
                                "completion": f" {a} plus {b} is {a + b}.", "id": f"r{i}"})
                    + "\n")
    return {"model": str(model), "data": str(data)}


def make_cfg(assets, run_dir, **training):
    raw = {"run_dir": str(run_dir), "model": assets["model"], "device": "cpu",
           "data": {"train": {"source": assets["data"]}, "max_length": 64},
           "training": {"epochs": 2, "batch_size": 8, "lr": 1e-3, **training}}
    return parse_config(raw)


def crash_then_resume(cfg, monkeypatch, step):
    monkeypatch.setenv(CRASH_ENV, str(step))
    with pytest.raises(SimulatedCrash):
        train(cfg, progress=False)
    monkeypatch.delenv(CRASH_ENV)
    return train(cfg, progress=False)


def test_full_run_layout_checkpoints_and_log(assets, tmp_path):
    cfg = make_cfg(assets, tmp_path / "run", method="full")
    cfg.data.duplication = {"fraction": 0.1, "times": 3, "seed": 0}  # 6 rows x3 -> 72 items
    s = train(cfg, progress=False)
    run = Path(s["run_dir"])
    assert s["checkpoints"] == ["step-000009", "step-000018"]  # ceil(72 / 8) = 9 steps/epoch
    assert len(s["loss_per_epoch"]) == 2 and s["loss_per_epoch"][1] < s["loss_per_epoch"][0]
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["method"] == "full"
    rows = [json.loads(x) for x in (run / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == N_ROWS and sum(r["times_per_epoch"] for r in rows) == 72
    assert (run / "tokenizer" / "tokenizer.json").is_file() and (run / "report").is_dir()
    ckpt = run / "checkpoints" / "step-000018"
    assert {p.name for p in ckpt.iterdir()} >= {"model.safetensors", "config.json",
                                                 "finemem_ckpt.json"}
    meta = json.loads((ckpt / "finemem_ckpt.json").read_text())
    assert meta["kind"] == "full" and meta["step"] == 18 and meta["epoch"] == 2.0
    assert meta["content_hash"] == ck.content_hash([ckpt / "model.safetensors"])
    assert not list(run.rglob("*.bin")) and not list(run.rglob("*.pt"))
    with Store(run / "results.sqlite") as st:
        assert [c["step"] for c in st.checkpoints()] == [9, 18]
        log = st.train_log()
    assert [r[0] for r in log] == list(range(1, 19)) and all(r[3] == 1e-3 for r in log)


def test_lora_checkpoint_holds_only_the_adapter_and_resumes_exactly(assets, tmp_path,
                                                                     monkeypatch):
    kw = dict(method="lora", lora={"r": 4, "alpha": 8, "dropout": 0.1}, grad_accum=2,
              scheduler="cosine", warmup_steps=2, save_every=2)  # dropout exercises the RNG
    full = train(make_cfg(assets, tmp_path / "a", **kw), progress=False)
    resumed = crash_then_resume(make_cfg(assets, tmp_path / "b", **kw), monkeypatch, 5)
    assert resumed["resumed_from"] == "step-000004"
    assert full["checkpoints"] == resumed["checkpoints"][-len(full["checkpoints"]):]
    last = full["checkpoints"][-1]
    a, b = (tmp_path / r / "checkpoints" / last for r in ("a", "b"))
    assert {p.name for p in a.iterdir()} == {"adapter_model.safetensors", "adapter_config.json",
                                             "finemem_ckpt.json"}
    assert all("lora_" in k for k in load_file(str(a / "adapter_model.safetensors")))
    assert (a / "adapter_model.safetensors").read_bytes() == \
        (b / "adapter_model.safetensors").read_bytes()
    assert resumed["loss_per_epoch"] == pytest.approx(full["loss_per_epoch"], abs=1e-6)


def test_full_resume_mid_epoch_equals_uninterrupted_run(assets, tmp_path, monkeypatch):
    kw = dict(method="full", grad_accum=2, scheduler="linear", warmup_steps=1,
              weight_decay=0.1, max_steps=7, save_every=3)
    train(make_cfg(assets, tmp_path / "a", **kw), progress=False)
    s = crash_then_resume(make_cfg(assets, tmp_path / "b", **kw), monkeypatch, 4)
    assert s["resumed_from"] == "step-000003"
    assert s["checkpoints"] == ["step-000003", "step-000006", "step-000007"]
    for name in s["checkpoints"]:
        fa, fb = (tmp_path / r / "checkpoints" / name / "model.safetensors" for r in "ab")
        assert fa.read_bytes() == fb.read_bytes(), name


def test_head_resume_equals_uninterrupted_run(assets, tmp_path, monkeypatch):
    kw = dict(method="head", max_steps=5, save_every=2)
    train(make_cfg(assets, tmp_path / "a", **kw), progress=False)
    s = crash_then_resume(make_cfg(assets, tmp_path / "b", **kw), monkeypatch, 3)
    assert s["resumed_from"] == "step-000002"
    fa, fb = (tmp_path / r / "checkpoints" / "step-000005" / "head.safetensors" for r in "ab")
    assert fa.read_bytes() == fb.read_bytes()


def test_head_checkpoint_holds_only_the_head(assets, tmp_path):
    s = train(make_cfg(assets, tmp_path / "run", method="head", max_steps=3), progress=False)
    ckpt = tmp_path / "run" / "checkpoints" / s["checkpoints"][-1]
    assert {p.name for p in ckpt.iterdir()} == {"head.safetensors", "finemem_ckpt.json"}
    head = load_file(str(ckpt / "head.safetensors"))
    assert list(head) == ["lm_head.weight"]
    base = load_file(str(Path(assets["model"]) / "model.safetensors"))["model.embed_tokens.weight"]
    assert head["lm_head.weight"].shape == base.shape
    assert not torch.equal(head["lm_head.weight"], base)  # it trained (the base head is tied)


def test_rerun_complete_does_nothing_and_other_config_needs_force(assets, tmp_path):
    cfg = make_cfg(assets, tmp_path / "run", max_steps=2)
    train(cfg, progress=False)
    ckpt = tmp_path / "run" / "checkpoints" / "step-000002" / "model.safetensors"
    mtime = ckpt.stat().st_mtime_ns
    again = train(cfg, progress=False)
    assert again["already_complete"] and ckpt.stat().st_mtime_ns == mtime
    other = make_cfg(assets, tmp_path / "run", max_steps=3, lr=5e-4)
    with pytest.raises(UserError, match="different config.*--force"):
        train(other, progress=False)
    s = train(other, force=True, progress=False)
    assert s["checkpoints"] == ["step-000003"] and not ckpt.exists()
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["training"]["lr"] \
        == 5e-4


def test_bad_input_writes_nothing(assets, tmp_path):
    bad_target = make_cfg(assets, tmp_path / "r1", method="lora",
                          lora={"target_modules": ["q_proj", "c_attn"]})
    with pytest.raises(UserError, match="c_attn.*down_proj, gate_proj"):
        train(bad_target, progress=False)
    assert not (tmp_path / "r1").exists()
    missing = make_cfg(assets, tmp_path / "r2")
    missing.data.train.source = str(tmp_path / "nope.jsonl")
    with pytest.raises(UserError):
        train(missing, progress=False)
    assert not (tmp_path / "r2").exists()
    (tmp_path / "r3").mkdir()
    (tmp_path / "r3" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a finemem run"):
        train(make_cfg(assets, tmp_path / "r3"), force=True, progress=False)
    assert (tmp_path / "r3" / "notes.txt").is_file()


def _cli(*args):
    code = "from finemem.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])


def test_cli_flags_override_file_and_bad_config_exits_2(assets, tmp_path):
    cfg = make_cfg(assets, tmp_path / "ignored").model_dump(mode="json")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = _cli("train", "--config", str(path), "--run-dir", str(tmp_path / "run"), "--method",
             "lora", "--max-steps", "2", "--set", "training.save_every=1", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "checkpoints written: 2" in r.stdout and str(tmp_path / "run") in r.stdout
    stored = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert stored["training"]["method"] == "lora" and stored["training"]["max_steps"] == 2
    cfg["training"]["lr"] = 0
    path.write_text(yaml.safe_dump(cfg))
    r = _cli("train", "--config", str(path), "--run-dir", str(tmp_path / "bad"))
    assert r.returncode == 2 and "training.lr" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_builtin_test_model_with_mar_loss(tmp_path):
    cfg = parse_config({"run_dir": str(tmp_path / "run"), "model": "builtin:test",
                        "data": {"train": {"source": "builtin:arith", "n": 16}},
                        "training": {"method": "lora", "loss": "mar", "epochs": 1,
                                     "batch_size": 8, "lr": 1e-3}})
    s = train(cfg, progress=False)
    assert s["checkpoints"] == ["step-000002"] and len(s["loss_per_epoch"]) == 1
    assert 0 < s["loss_per_epoch"][0] < 20


def test_resume_refuses_changed_data(assets, tmp_path, monkeypatch):
    data = tmp_path / "train.jsonl"
    data.write_text(Path(assets["data"]).read_text())
    cfg = make_cfg(assets, tmp_path / "run", max_steps=4, save_every=2)
    cfg.data.train.source = str(data)
    monkeypatch.setenv(CRASH_ENV, "3")
    with pytest.raises(SimulatedCrash):
        train(cfg, progress=False)
    monkeypatch.delenv(CRASH_ENV)
    data.write_text(data.read_text().replace("plus 1 is", "plus one is"))
    with pytest.raises(UserError, match="training data changed"):
        train(cfg, progress=False)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == \
        ["step-000002"]
