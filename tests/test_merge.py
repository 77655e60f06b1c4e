import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from finemem.models.merge import (checkpoint_kind, merge_checkpoints, merge_lora_concat,
                                    merge_state_dicts)
from finemem.errors import UserError


def test_merge_state_dicts_arithmetic():
    a = {"w": torch.tensor([[1.0, 2.0]]), "step": torch.tensor([7])}
    b = {"w": torch.tensor([[3.0, 6.0]]), "step": torch.tensor([9])}
    assert torch.equal(merge_state_dicts(a, b)["w"], torch.tensor([[2.0, 4.0]]))
    m = merge_state_dicts(a, b, alpha=0.25)                 # .25 * a + .75 * b
    assert torch.allclose(m["w"], torch.tensor([[2.5, 5.0]]))
    assert torch.equal(m["step"], torch.tensor([7]))        # non-float: copied from a
    assert torch.equal(merge_state_dicts(a, b, alpha=1.0)["w"], a["w"])
    assert a["w"].tolist() == [[1.0, 2.0]]                   # inputs untouched


def test_merge_keeps_low_precision_dtype_and_accuracy():
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(1000, generator=g).to(torch.bfloat16)}
    b = {"w": torch.randn(1000, generator=g).to(torch.bfloat16)}
    m = merge_state_dicts(a, b, alpha=0.3)["w"]
    assert m.dtype == torch.bfloat16
    # Accumulated in float32 and rounded once, it matches the exact average rounded to bf16
    # (up to rare double rounding); arithmetic in bf16 would miss a third of the entries.
    exact = (0.3 * a["w"].double() + 0.7 * b["w"].double()).to(torch.bfloat16)
    assert int((m != exact).sum()) <= 2
    assert int(((0.3 * a["w"] + 0.7 * b["w"]) != exact).sum()) > 100


def test_merge_state_dicts_refuses_mismatch():
    with pytest.raises(UserError, match="different tensors"):
        merge_state_dicts({"w": torch.zeros(2)}, {"v": torch.zeros(2)})
    with pytest.raises(UserError, match=r"\(2,\) torch.float32 in a but \(3,\)"):
        merge_state_dicts({"w": torch.zeros(2)}, {"w": torch.zeros(3)})
    with pytest.raises(UserError, match="same dtype"):
        merge_state_dicts({"w": torch.zeros(2)}, {"w": torch.zeros(2, dtype=torch.float16)})
    with pytest.raises(UserError, match=r"alpha must be in \[0, 1\]"):
        merge_state_dicts({"w": torch.zeros(2)}, {"w": torch.zeros(2)}, alpha=1.5)


def _lora_sd(seed):
    g = torch.Generator().manual_seed(seed)
    return {"m.proj.lora_A.weight": torch.randn(2, 5, generator=g),     # (r, in)
            "m.proj.lora_B.weight": torch.randn(4, 2, generator=g),     # (out, r)
            "m.emb.lora_embedding_A": torch.randn(2, 10, generator=g),  # (r, vocab)
            "m.emb.lora_embedding_B": torch.randn(6, 2, generator=g),   # (dim, r)
            "m.head.weight": torch.randn(3, 4, generator=g)}


def test_lora_concat_is_the_average_of_the_deltas():
    a, b, alpha = _lora_sd(0), _lora_sd(1), 0.3
    m = merge_lora_concat(a, b, alpha)
    assert m["m.proj.lora_A.weight"].shape == (4, 5) and m["m.proj.lora_B.weight"].shape == (4, 4)
    for pre, A, B in [("m.proj.", "lora_A.weight", "lora_B.weight"),
                      ("m.emb.", "lora_embedding_A", "lora_embedding_B")]:
        want = alpha * a[pre + B] @ a[pre + A] + (1 - alpha) * b[pre + B] @ b[pre + A]
        assert torch.allclose(m[pre + B] @ m[pre + A], want, atol=1e-6)
    assert torch.allclose(m["m.head.weight"], alpha * a["m.head.weight"]
                          + (1 - alpha) * b["m.head.weight"])
    # Averaging the factors separately is a different (wrong) model.
    lin = merge_state_dicts(a, b, alpha)
    naive = lin["m.proj.lora_B.weight"] @ lin["m.proj.lora_A.weight"]
    exact = m["m.proj.lora_B.weight"] @ m["m.proj.lora_A.weight"]
    assert not torch.allclose(naive, exact, atol=1e-3)


def _full_ckpt(path, w, extra=True):
    path.mkdir()
    save_file({"w": w, "ids": torch.arange(3)}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"hidden": 2}))
    if extra:
        (path / "tokenizer.json").write_text("{}")
        (path / "trainer_state.json").write_text("{}")


def test_merge_full_checkpoint_folders(tmp_path):
    _full_ckpt(tmp_path / "a", torch.tensor([0.0, 4.0]))
    _full_ckpt(tmp_path / "b", torch.tensor([2.0, 8.0]), extra=False)
    out = merge_checkpoints(tmp_path / "a", tmp_path / "b", tmp_path / "m", alpha=0.5)
    sd = load_file(str(out / "model.safetensors"))
    assert sd["w"].tolist() == [1.0, 6.0] and sd["ids"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "merge.json",
                                                     "model.safetensors", "tokenizer.json"]
    rec = json.loads((out / "merge.json").read_text())
    assert rec["kind"] == "full" and rec["alpha"] == 0.5 and rec["method"] == "linear"
    assert rec["a"] == str((tmp_path / "a").resolve()) and rec["formula"] == "0.5 * a + 0.5 * b"
    assert checkpoint_kind(out) == "full"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())   # no temp left


def test_merge_checkpoints_refusals(tmp_path):
    _full_ckpt(tmp_path / "a", torch.zeros(2))
    _full_ckpt(tmp_path / "b", torch.zeros(2))
    (tmp_path / "out").mkdir()
    with pytest.raises(UserError, match="already exists"):
        merge_checkpoints(tmp_path / "a", tmp_path / "b", tmp_path / "out")
    lora = tmp_path / "l"
    lora.mkdir()
    save_file(_lora_sd(0), str(lora / "adapter_model.safetensors"))
    with pytest.raises(UserError, match="no adapter_config.json"):
        checkpoint_kind(lora)
    (lora / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 4}))
    with pytest.raises(UserError, match="cannot merge a full checkpoint"):
        merge_checkpoints(tmp_path / "a", lora, tmp_path / "m")
    with pytest.raises(UserError, match="neither model.safetensors"):
        merge_checkpoints(tmp_path / "out", tmp_path / "b", tmp_path / "m")
    with pytest.raises(UserError, match="does not exist"):
        merge_checkpoints(tmp_path / "nope", tmp_path / "b", tmp_path / "m")
    assert not (tmp_path / "m").exists()


def _lora_folder(path, seed, cfg):
    path.mkdir()
    save_file(_lora_sd(seed), str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps(cfg))


def test_merge_lora_folders_rewrites_rank(tmp_path):
    cfg = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "use_rslora": False,
           "rank_pattern": {}, "alpha_pattern": {}, "peft_version": "x"}
    _lora_folder(tmp_path / "a", 0, cfg)
    _lora_folder(tmp_path / "b", 1, {**cfg, "peft_version": "y"})   # ignored difference
    out = merge_checkpoints(tmp_path / "a", tmp_path / "b", tmp_path / "m", alpha=0.5)
    new = json.loads((out / "adapter_config.json").read_text())
    assert new["r"] == 4 and new["lora_alpha"] == 8          # scaling alpha/r kept at 2
    rec = json.loads((out / "merge.json").read_text())
    assert rec["method"] == "lora_concat" and rec["rank"] == {"a": 2, "merged": 4}
    lin = merge_checkpoints(tmp_path / "a", tmp_path / "b", tmp_path / "lin",
                            lora_method="linear")
    assert json.loads((lin / "adapter_config.json").read_text())["r"] == 2
    rs = {**cfg, "use_rslora": True, "alpha_pattern": {"proj": 3}}
    _lora_folder(tmp_path / "c", 0, rs)
    _lora_folder(tmp_path / "d", 1, rs)
    new = json.loads((merge_checkpoints(tmp_path / "c", tmp_path / "d", tmp_path / "m2")
                      / "adapter_config.json").read_text())
    assert new["lora_alpha"] == pytest.approx(4 * math.sqrt(2))    # alpha / sqrt(r) kept
    assert new["alpha_pattern"]["proj"] == pytest.approx(3 * math.sqrt(2))
    _lora_folder(tmp_path / "e", 1, {**cfg, "r": 8})
    with pytest.raises(UserError, match=r"different settings \(\['r'\]\)"):
        merge_checkpoints(tmp_path / "a", tmp_path / "e", tmp_path / "m3")


@pytest.mark.integration
def test_merged_peft_adapter_loads_and_equals_average_model(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.proj, self.head = nn.Embedding(10, 6), nn.Linear(6, 4), nn.Linear(4, 3)

        def forward(self, x):
            return self.head(self.proj(self.emb(x)))

    def base():
        torch.manual_seed(0)
        return Tiny()

    cfg = LoraConfig(r=2, lora_alpha=4, target_modules=["emb", "proj"], modules_to_save=["head"],
                     init_lora_weights=False)   # random B, so the adapters differ from base
    effective = {}
    for name, seed in [("a", 1), ("b", 2)]:
        torch.manual_seed(seed)
        model = get_peft_model(base(), cfg)
        model.save_pretrained(tmp_path / name)
        effective[name] = model.merge_and_unload().state_dict()
    merge_checkpoints(tmp_path / "a", tmp_path / "b", tmp_path / "m", alpha=0.5)
    merged = PeftModel.from_pretrained(base(), tmp_path / "m").merge_and_unload().state_dict()
    for k in ("emb.weight", "proj.weight", "proj.bias", "head.weight"):
        want = 0.5 * effective["a"][k] + 0.5 * effective["b"][k]
        assert torch.allclose(merged[k], want, atol=1e-5), k
