"""engine.load_run_checkpoints / iter_models on hand-built run folders (pinned layout): the
adapter and head swaps give the same scores as loading each checkpoint fresh."""

import hashlib
import json

import numpy as np
import pytest
import torch
import yaml

from finemem.engine import adapter_off, generate, iter_models, load_run_checkpoints, score
from finemem.errors import UserError
from test_engine_helpers import char_tokenizer, encode_all, reference_scores, texts, tiny_llama


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("FINEMEM_HOME", str(tmp_path / "home"))  # base-hash memo goes here


def _sha(files):
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.read_bytes())
    return h.hexdigest()


def _meta(d, step, kind, base):
    meta = {"step": step, "epoch": step / 10, "kind": kind, "base_model": str(base),
            "content_hash": _sha(d.glob("*.safetensors"))}
    (d / "finemem_ckpt.json").write_text(json.dumps(meta))


def _run(tmp_path, kind):
    """A run folder with a tied base model and three checkpoints of `kind`."""
    tok = char_tokenizer()
    base_dir = tmp_path / "base"
    tiny_llama(len(tok), seed=2, tie=True).save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": str(base_dir)}))
    for k, step in enumerate((100, 20, 60)):  # written out of order on purpose
        d = run / "checkpoints" / f"step-{step:06d}"
        torch.manual_seed(10 + k)
        if kind == "lora":
            from peft import LoraConfig, get_peft_model
            from transformers import AutoModelForCausalLM

            r = 2 if step == 100 else 4  # the last adapter has another shape
            m = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), LoraConfig(
                r=r, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                init_lora_weights=False))
            m.save_pretrained(d)
        elif kind == "full":
            m = tiny_llama(len(tok), seed=20 + k, tie=True)
            m.save_pretrained(d)
        else:
            from safetensors.torch import save_file

            d.mkdir()
            save_file({"lm_head.weight": torch.randn(len(tok), 48) * 0.2},
                      str(d / "head.safetensors"))
        _meta(d, step, kind, base_dir)
    (run / "checkpoints" / "step-000200").mkdir()  # incomplete: no finemem_ckpt.json
    return run, base_dir, tok


def _fresh(ref, base_dir):
    from transformers import AutoModelForCausalLM

    if ref.kind == "full":
        return AutoModelForCausalLM.from_pretrained(ref.path).eval()
    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    if ref.kind == "lora":
        from peft import PeftModel

        return PeftModel.from_pretrained(base, ref.path).eval()
    if ref.kind == "head":
        from safetensors.torch import load_file

        base.lm_head.weight = torch.nn.Parameter(
            load_file(f"{ref.path}/head.safetensors")["lm_head.weight"])
    return base


def _assert_same(a, b):
    for x, y in zip(a, b):
        assert np.max(np.abs(x.logprob - y.logprob)) < 1e-6
        assert np.array_equal(x.correct, y.correct)


@pytest.mark.parametrize("kind", ["lora", "head", "full"])
def test_swapped_models_score_like_fresh_loads(tmp_path, kind):
    run, base_dir, tok = _run(tmp_path, kind)
    pairs = encode_all(tok, texts(6, seed=4))
    refs = load_run_checkpoints(run)
    assert [r.name for r in refs] == ["step-000000", "step-000020", "step-000060",
                                      "step-000100"]
    assert [r.kind for r in refs] == ["base"] + [kind] * 3
    assert refs[0].path is None and refs[0].base_model == str(base_dir)
    # base checkpoint hash: sha256 of its weights, as for the checkpoints
    assert refs[0].content_hash == _sha(base_dir.glob("*.safetensors"))
    # base in the middle (disable_adapter); 20 -> 60 same adapter shape (weights copied in);
    # 60 -> 100 another shape (loaded beside, swapped)
    order = [refs[1], refs[0], refs[2], refs[3], refs[0]]
    seen, got = [], []
    for ref, model in iter_models(run, refs=order, device="cpu"):
        seen.append(ref.name)
        got.append(score(model, pairs))
    assert seen == [r.name for r in order]
    per_ckpt = {}
    for ref, s in zip(order, got):
        _assert_same(s, score(_fresh(ref, base_dir), pairs))
        per_ckpt.setdefault(ref.name, s)
    lp = [per_ckpt[r.name][0].logprob for r in refs]
    assert all(np.abs(lp[0] - x).max() > 1e-3 for x in lp[1:])  # the swaps did change the model


def test_default_refs_and_plain_base_first(tmp_path):
    run, base_dir, tok = _run(tmp_path, "lora")
    pairs = encode_all(tok, texts(3, seed=1))
    names = []
    for ref, model in iter_models(run, device="cpu"):
        names.append(ref.name)
        if ref.kind == "base":
            _assert_same(score(model, pairs), score(_fresh(ref, base_dir), pairs))
    assert names == ["step-000000", "step-000020", "step-000060", "step-000100"]


def test_peft_wrapped_model_scores_and_generates_like_plain_calls(tmp_path):
    run, _, tok = _run(tmp_path, "lora")
    pairs = encode_all(tok, texts(4, seed=6))
    refs = load_run_checkpoints(run)
    for ref, model in iter_models(run, refs=[refs[2]], device="cpu"):
        for s, r in zip(score(model, pairs), reference_scores(model, pairs)):
            assert np.max(np.abs(s.logprob - r["logprob"])) < 1e-5
        for (ctx, _), (g,) in zip(pairs, generate(model, tok, [c for c, _ in pairs],
                                                  max_new_tokens=6)):
            ids = torch.tensor([ctx])
            hf = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                max_new_tokens=6, do_sample=False, pad_token_id=0)
            assert g.token_ids == hf[0, len(ctx):].tolist()


def test_full_refs_mix_with_adapter_swaps(tmp_path):
    from finemem.engine import CheckpointRef

    run, base_dir, tok = _run(tmp_path, "lora")
    merged = run / "merges" / "avg"
    tiny_llama(len(tok), seed=7, tie=True).save_pretrained(merged)
    refs = load_run_checkpoints(run)
    full = CheckpointRef("avg", 40, 4.0, "full", str(merged), str(base_dir), "x")
    order = [refs[1], full, refs[0], refs[2], full]
    pairs = encode_all(tok, texts(3, seed=8))
    got = [(ref, score(model, pairs)) for ref, model in iter_models(run, refs=order,
                                                                     device="cpu")]
    assert [r.name for r, _ in got] == [r.name for r in order]
    for ref, s in got:
        _assert_same(s, score(_fresh(ref, base_dir), pairs))


def test_moved_base_folder_falls_back_to_the_config(tmp_path):
    run, base_dir, _ = _run(tmp_path, "head")
    moved = tmp_path / "moved"
    base_dir.rename(moved)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": str(moved)}))
    refs = load_run_checkpoints(run)
    assert {r.base_model for r in refs} == {str(moved)}
    assert len(refs) == 4


def test_run_without_checkpoints_is_just_the_base(tmp_path):
    run, base_dir, _ = _run(tmp_path, "head")
    for d in (run / "checkpoints").iterdir():
        (d / "finemem_ckpt.json").unlink(missing_ok=True)
    refs = load_run_checkpoints(run)
    assert [(r.name, r.kind, r.base_model) for r in refs] == [("step-000000", "base",
                                                              str(base_dir))]


def test_not_a_run_folder(tmp_path):
    with pytest.raises(UserError, match="config.yaml"):
        load_run_checkpoints(tmp_path)


def test_large_models_audit_lora_merged_and_come_back_to_the_base(tmp_path, monkeypatch):
    """On a large model (here: any head, by lowering the threshold) each adapter is merged
    for inference and unmerged at the next swap: the scores equal the unmerged adapter's and
    the base's own up to float rounding, whatever the order of swaps."""
    import importlib

    monkeypatch.setattr(importlib.import_module("finemem.engine.score"), "LARGE_HEAD", 0)
    run, base_dir, tok = _run(tmp_path, "lora")
    pairs = encode_all(tok, texts(6, seed=4))
    refs = load_run_checkpoints(run)
    order = [refs[1], refs[0], refs[2], refs[3], refs[0], refs[2]]
    for ref, model in iter_models(run, refs=order, device="cpu"):
        if ref.kind == "lora":
            assert any(getattr(m, "merged", False) for m in model.modules())
        for x, y in zip(score(model, pairs), score(_fresh(ref, base_dir), pairs)):
            assert np.max(np.abs(x.logprob - y.logprob)) < 1e-5
        if ref.kind == "lora":  # the base without a second copy, then the adapter again
            with adapter_off(model) as off:
                for x, y in zip(score(off, pairs), score(_fresh(refs[0], base_dir), pairs)):
                    assert np.max(np.abs(x.logprob - y.logprob)) < 1e-5
            assert any(getattr(m, "merged", False) for m in model.modules())
            for x, y in zip(score(model, pairs), score(_fresh(ref, base_dir), pairs)):
                assert np.max(np.abs(x.logprob - y.logprob)) < 1e-5


def test_adapter_off_of_a_plain_model_is_none():
    with adapter_off(tiny_llama(8, seed=0)) as off:
        assert off is None
