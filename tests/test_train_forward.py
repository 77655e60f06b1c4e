"""The training forward pass applies the output head only to loss-bearing positions
(finemem.train.forward) and trains the same weights as the full-logits forward: on the
builtin:test model (full and LoRA, CE and MAR) and on a tiny Llama GGUF (tests/test_gguf.py)."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from finemem.config import TrainingConfig, parse_config
from finemem.train import forward, loop
from finemem.train import train
from finemem.train.loss import causal_lm_loss, rows_loss, shift_labels


class _Acc:
    """What batch_loss needs of an Accelerator in one process without mixed precision."""

    num_processes = 1

    @staticmethod
    def unwrap_model(m):
        return m

    @staticmethod
    def autocast():
        from contextlib import nullcontext

        return nullcontext()


def _batch():
    ids = torch.randint(0, 40, (3, 9), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, :5] = -100  # context
    labels[2, 7:] = -100  # padding
    mask = torch.ones_like(ids)
    mask[2, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("kind", ["ce", "mar"])
def test_head_sees_only_loss_positions_and_loss_is_unchanged(kind):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=2, tie_word_embeddings=True))
    batch, t = _batch(), TrainingConfig(loss=kind)
    rows = []
    hook = model.lm_head.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[:-1].numel()))
    assert forward.head_parts(model, _Acc, t) is None  # a small head keeps the full forward
    parts = split_parts(model, t)
    split = forward.batch_loss(model, batch, t, parts, _Acc)
    full = forward.batch_loss(model, batch, t, None, _Acc)
    hook.remove()
    n_loss = int((shift_labels(batch["labels"]) != -100).sum())
    assert parts is not None and rows == [n_loss, 3 * 9]  # split: N rows; full: B * T
    torch.testing.assert_close(split, full, rtol=1e-6, atol=1e-7)
    logits = model(input_ids=batch["input_ids"]).logits
    torch.testing.assert_close(full, causal_lm_loss(logits, batch["labels"], kind=kind))


def split_parts(model, t):
    """The split as a large-vocabulary model gets it, for a test's small one."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(forward, "SPLIT_MIN_VOCAB", 0)
        return forward.head_parts(model, _Acc, t)


def test_rows_loss_unknown_kind():
    with pytest.raises(ValueError, match="unknown loss 'x'"):
        rows_loss(torch.zeros(2, 3), torch.tensor([0, 1]), kind="x")


def _weights(run_dir):
    ck = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    return load_file(str(next(ck.glob("*.safetensors"))))


def trained_both_ways(raw: dict, tmp_path, monkeypatch) -> tuple[dict, dict]:
    """The final weights of `raw` trained with the head split (forced on for these small
    vocabularies) and with the full forward (head_parts forced to None)."""
    out = {}
    for split in (True, False):
        run = tmp_path / f"run-{split}"
        with monkeypatch.context() as m:
            if split:
                m.setattr(forward, "SPLIT_MIN_VOCAB", 0)
            else:
                m.setattr(loop, "head_parts", lambda *a, **k: None)
            train(parse_config({**raw, "run_dir": str(run)}), progress=False)
        out[split] = _weights(run)
    return out[True], out[False]


def assert_same_weights(a: dict, b: dict) -> None:
    """Equal up to float summation order: the loss sums the same per-token terms over N rows
    instead of B * T (with zeros); AdamW's division by sqrt(v) turns that 1e-7 noise on a
    near-zero gradient into at most a few 1e-6 of weight after a few steps at lr 3e-3."""
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5)


@pytest.mark.integration
@pytest.mark.parametrize("method,loss", [("full", "ce"), ("lora", "mar")])
def test_same_weights_as_full_logits_builtin_test(tmp_path, monkeypatch, method, loss):
    raw = {"model": "builtin:test", "device": "cpu",
           "data": {"train": {"source": "builtin:arith", "n": 24}},
           "training": {"method": method, "loss": loss, "max_steps": 3, "batch_size": 8,
                        "lr": 3e-3, "lora": {"dropout": 0.1}}}
    split, full = trained_both_ways(raw, tmp_path, monkeypatch)
    assert_same_weights(split, full)
    assert_trained(split, "builtin:test")


def assert_trained(weights: dict, model: str) -> None:
    """Training moved the weights: LoRA's B matrices (zero at the start) or the base's."""
    from finemem.models.load import resolve_model

    if any("lora_B" in k for k in weights):
        assert any((weights[k] != 0).any() for k in weights if "lora_B" in k)
        return
    from pathlib import Path

    [f] = Path(resolve_model(model)).glob("*.safetensors")
    base = load_file(str(f))
    assert any(not torch.equal(weights[k], base[k]) for k in weights if k in base)
