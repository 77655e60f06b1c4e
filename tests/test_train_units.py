"""Unit tests of finemem.train: MAR/CE loss against hand values, methods, batches, state I/O."""

import json
import math
import random

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from finemem.config import TrainingConfig
from finemem.errors import UserError
from finemem.train import checkpoint as ck
from finemem.train.batches import collate, epoch_batches
from finemem.train.loss import ce_loss, mar_loss
from finemem.train.methods import apply_method, linear_module_names, resolve_lora_targets

LN2 = math.log(2.0)


def tiny_llama(tied=True):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=tied)
    return LlamaForCausalLM(cfg)


def _one_token_logits():
    # Position 0 has logits [0, 0, ln 2] -> q = [1/4, 1/4, 1/2]; it predicts label 2 (p = 1/2).
    z = torch.tensor([[[0.0, 0.0, LN2], [0.3, -1.0, 2.0]]], dtype=torch.float64,
                     requires_grad=True)
    y = torch.tensor([[-100, 2]])
    return z, y


def test_mar_value_and_detached_gradient_by_hand():
    z, y = _one_token_logits()
    loss = mar_loss(z, y, detach=True)
    assert loss.item() == pytest.approx(0.5 * LN2)  # (1 - 1/2) * ln 2, one loss token
    loss.backward()
    # detached weight: w * (q - e_y) = 0.5 * [1/4, 1/4, -1/2]
    assert z.grad[0, 0].tolist() == pytest.approx([0.125, 0.125, -0.25])
    assert z.grad[0, 1].tolist() == [0.0, 0.0, 0.0]  # the last position predicts nothing


def test_mar_undetached_gradient_by_hand():
    z, y = _one_token_logits()
    mar_loss(z, y, detach=False).backward()
    # dL/dz = (p ln p - (1 - p)) * (e_y - q) with p = 1/2: c = -ln2/2 - 1/2
    c = -LN2 / 2 - 0.5
    assert z.grad[0, 0].tolist() == pytest.approx([c * -0.25, c * -0.25, c * 0.5])
    assert torch.autograd.gradcheck(lambda t: mar_loss(t, y, detach=False), (z.detach()
                                    .requires_grad_(),))


def test_mar_normalised_by_loss_tokens_like_ce():
    # Two sequences, three loss tokens; padding (-100) and the context are ignored.
    z = torch.zeros(2, 3, 4)  # uniform: p = 1/4 everywhere, CE = ln 4, w = 3/4
    y = torch.tensor([[-100, 1, 2], [-100, 3, -100]])
    assert ce_loss(z, y).item() == pytest.approx(math.log(4))
    assert mar_loss(z, y).item() == pytest.approx(0.75 * math.log(4))


def test_ce_matches_transformers_loss():
    model = tiny_llama()
    ids = torch.randint(0, 40, (2, 7))
    labels = ids.clone()
    labels[0, :3] = -100
    labels[1, 5:] = -100
    out = model(input_ids=ids, labels=labels)
    assert ce_loss(out.logits, labels).item() == pytest.approx(out.loss.item(), rel=1e-5)


def test_lora_target_errors_name_module_and_list_linears():
    model = tiny_llama()
    assert linear_module_names(model) == ["down_proj", "gate_proj", "k_proj", "lm_head",
                                          "o_proj", "q_proj", "up_proj", "v_proj"]
    assert resolve_lora_targets(model, "default")[0] == "q_proj"
    assert resolve_lora_targets(model, "all-linear") == "all-linear"
    with pytest.raises(UserError) as e:
        resolve_lora_targets(model, ["q_proj", "c_attn"])
    msg = str(e.value)
    assert "'c_attn'" in msg and "down_proj, gate_proj, k_proj" in msg
    assert "training.lora.target_modules" in msg


def test_lora_default_targets_follow_the_architecture():
    """'default' keeps the Llama projections for Llama-style models and takes peft's default
    for the model type otherwise (GPT-2: c_attn), so LoRA on a GPT-2 folder works unconfigured;
    a model type peft does not know still gets the one-line error."""
    from transformers import GPT2Config, GPT2LMHeadModel

    assert resolve_lora_targets(tiny_llama(), "default") == [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=16, n_layer=1, n_head=2,
                                      n_positions=32))
    assert resolve_lora_targets(gpt2, "default") == ["c_attn"]
    model = apply_method(gpt2, TrainingConfig(method="lora"))
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all("c_attn.lora_" in n for n in trained)
    gpt2.config.model_type = "not-a-known-type"
    with pytest.raises(UserError, match="no linear module 'q_proj'.*try 'all-linear'"):
        resolve_lora_targets(gpt2, "default")


def test_head_method_unties_and_trains_only_the_head():
    model = tiny_llama(tied=True)
    emb_before = model.get_input_embeddings().weight.detach().clone()
    model = apply_method(model, TrainingConfig(method="head"))
    head = model.get_output_embeddings().weight
    assert head is not model.get_input_embeddings().weight
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["lm_head.weight"]
    opt = torch.optim.SGD([head], lr=1.0)
    model(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    opt.step()
    assert torch.equal(model.get_input_embeddings().weight, emb_before)
    assert not torch.equal(head.detach(), emb_before)


def test_lora_method_trains_only_adapters():
    model = apply_method(tiny_llama(), TrainingConfig(method="lora"))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert sum("q_proj" in n for n in names) == 2  # lora_A and lora_B of one layer


def test_epoch_batches_deterministic_cover_all_and_change_per_epoch():
    a = epoch_batches(10, batch_size=4, seed=3, epoch=1)
    assert a == epoch_batches(10, batch_size=4, seed=3, epoch=1)
    assert [len(b) for b in a] == [4, 4, 2]
    assert sorted(i for b in a for i in b) == list(range(10))
    assert a != epoch_batches(10, batch_size=4, seed=3, epoch=2)
    shards = [epoch_batches(10, batch_size=4, seed=3, epoch=1, num_processes=2,
                            process_index=p) for p in (0, 1)]
    assert shards[0] == [a[0], a[2]] and shards[1] == [a[1], a[0]]  # padded by cycling


def test_collate_pads_right_and_masks_labels():
    items = [(torch.tensor([5, 6, 7]), torch.tensor([-100, 6, 7])),
             (torch.tensor([8]), torch.tensor([8]))]
    b = collate(items, pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]


def test_state_roundtrip_optimizer_scheduler_rng(tmp_path):
    from transformers import get_scheduler

    p = torch.nn.Parameter(torch.ones(3))
    q = torch.nn.Parameter(torch.ones(2, 2))
    opt = torch.optim.AdamW([{"params": [q], "weight_decay": 0.1},
                             {"params": [p], "weight_decay": 0.0}], lr=0.1)
    sch = get_scheduler("cosine", opt, num_warmup_steps=1, num_training_steps=10)
    for _ in range(3):
        (p.sum() + (q ** 2).sum()).backward()
        opt.step(), sch.step(), opt.zero_grad()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    ck.write_state(tmp_path / "state", optimizer=opt, scheduler=sch,
                   trainer_state={"step": 3, "checkpoint": "step-000003"})
    expect = (random.random(), np.random.rand(), torch.rand(1).item())
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.pkl"))

    p2, q2 = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2, 2))
    opt2 = torch.optim.AdamW([{"params": [q2], "weight_decay": 0.1},
                              {"params": [p2], "weight_decay": 0.0}], lr=0.1)
    sch2 = get_scheduler("cosine", opt2, num_warmup_steps=1, num_training_steps=10)
    ts = ck.restore_state(tmp_path, optimizer=opt2, scheduler=sch2)
    assert ts["step"] == 3
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expect
    assert sch2.get_last_lr() == sch.get_last_lr()
    for k in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(opt2.state[p2][k], opt.state[p][k])
        assert torch.equal(opt2.state[q2][k], opt.state[q][k])


def test_recover_state_discards_orphan_and_commits_finished_swap(tmp_path):
    run = tmp_path
    (run / "checkpoints" / "step-000004").mkdir(parents=True)
    (run / "checkpoints" / "step-000004" / ck.CKPT_META).write_text("{}")
    (run / "checkpoints" / ".tmp-step-000008").mkdir()
    for name, ckpt in (("state", "step-000004"), ("state.tmp", "step-000008")):
        (run / name).mkdir()
        (run / name / "trainer_state.json").write_text(json.dumps({"checkpoint": ckpt}))
    ck.recover_state(run)  # step-000008 never got renamed into place: its state is dropped
    assert not (run / "state.tmp").exists()
    assert not (run / "checkpoints" / ".tmp-step-000008").exists()
    assert ck.read_state(run)["checkpoint"] == "step-000004"

    (run / "checkpoints" / "step-000008").mkdir()
    (run / "checkpoints" / "step-000008" / ck.CKPT_META).write_text("{}")
    (run / "state.tmp").mkdir()
    (run / "state.tmp" / "trainer_state.json").write_text(json.dumps({"checkpoint":
                                                                      "step-000008"}))
    ck.recover_state(run)  # the checkpoint made it; finish the swap
    assert ck.read_state(run)["checkpoint"] == "step-000008"
