"""DP-SGD fine-tuning (finemem/train/dp.py): clipping by hand, LoRA adapters that move,
exact resume with the same epsilon, refusals, and the one-run audit below the promise."""

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from finemem.config import parse_config
from finemem.errors import UserError
from finemem.train import train
from finemem.train.dp import DPRun, check_dp, check_layers
from finemem.train.loss import causal_lm_loss
from test_train_e2e import assets, crash_then_resume, make_cfg  # noqa: F401 (fixture)

DP = {"epsilon": 8, "max_grad_norm": 1.0, "accountant": "rdp"}


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
        tie_word_embeddings=True))


def _training(**dp):
    raw = {"run_dir": "r", "data": {"train": {"source": "builtin:arith"}},
           "training": {"batch_size": 4, "dp": {**DP, **dp}}}
    return parse_config(raw).training


def test_clipping_bounds_every_per_sample_gradient():
    """Per-sample gradients equal per-row backward passes (by hand), and with no noise the
    step's gradient is (1/B) sum_i min(1, C / |g_i|) g_i, each clipped term of norm <= C."""
    g = torch.Generator().manual_seed(1)
    items = []
    for n in (5, 7, 6, 4):  # rows of different lengths (padding), loss on the last 3 tokens
        ids = torch.randint(0, 38, (n,), generator=g)
        labels = ids.clone()
        labels[: n - 3] = -100
        items.append((ids, labels))
    model = _tiny_llama()
    ref = copy.deepcopy(model)
    t = _training(max_grad_norm=0.05)
    run = DPRun(t, n=4, total_steps=1, seed=0)   # q = 4 / 4: every row in the batch
    run.sigma = 0.0
    gsm, opt = run.wrap(model, torch.optim.SGD(model.parameters(), lr=1.0))
    assert run.poisson_batch(0) == [0, 1, 2, 3]
    run.backward(gsm, items, 0, pad=39, device="cpu", training=t)
    params = [p for p in model.parameters() if p.requires_grad]
    hand = []
    for ids, labels in items:  # one row at a time: its own gradient
        ref.zero_grad()
        logits = ref(input_ids=ids[None]).logits
        causal_lm_loss(logits, labels[None], kind="ce").backward()
        hand.append(torch.cat([p.grad.flatten() for p in ref.parameters()]))
    per = torch.stack([torch.cat([p.grad_sample[i].flatten() for p in params])
                       for i in range(4)])
    assert torch.allclose(per, torch.stack(hand), atol=1e-5)
    opt.pre_step()  # clip, (zero) noise, scale
    got = torch.cat([p.grad.flatten() for p in params])
    norms = torch.stack(hand).norm(dim=1)
    assert (norms > 0.05).all()  # every row is clipped at this C
    clipped = [h * min(1.0, 0.05 / (float(n) + 1e-6)) for h, n in zip(hand, norms)]
    assert all(float(c.norm()) <= 0.05 + 1e-6 for c in clipped)
    assert torch.allclose(got, sum(clipped) / 4, atol=1e-7)


def test_poisson_batches_are_seeded_by_step():
    t = _training()
    a, b = DPRun(t, n=200, total_steps=10, seed=3), DPRun(t, n=200, total_steps=10, seed=3)
    assert a.poisson_batch(5) == b.poisson_batch(5) != a.poisson_batch(6)
    sizes = [len(a.poisson_batch(s)) for s in range(200)]
    assert 3.0 < sum(sizes) / len(sizes) < 5.0  # expected batch 4 = q n
    assert a.delta == pytest.approx(1 / 2000)   # delta auto = 1 / (10 n)
    assert a.epsilon(10) == pytest.approx(8, abs=0.1) and a.epsilon(5) < a.epsilon(10)


def test_an_empty_poisson_batch_still_steps_with_noise():
    model = _tiny_llama()
    t = _training()
    run = DPRun(t, n=4000, total_steps=100, seed=0)  # q = 1e-3: many steps draw no row
    step = next(s for s in range(100) if not run.poisson_batch(s))
    before = [p.detach().clone() for p in model.parameters()]
    gsm, opt = run.wrap(model, torch.optim.SGD(model.parameters(), lr=1.0))
    items = [(torch.arange(5), torch.arange(5))] * 4000
    assert run.backward(gsm, items, step, pad=39, device="cpu", training=t) is None
    opt.step()
    moved = [not torch.equal(a, p) for a, p in zip(before, model.parameters())]
    assert all(moved)  # noise only: the step is still taken, as the accountant counts it


def test_refusals_in_one_line():
    cfg = parse_config({"run_dir": "r", "data": {"train": {"source": "builtin:arith"}},
                        "training": {"grad_accum": 2, "batch_size": 8, "dp": DP}})
    with pytest.raises(UserError, match="grad_accum: 1.*batch_size: 16"):
        check_dp(cfg, num_processes=1)
    cfg.training.grad_accum = 1
    cfg.training.mixed_precision = "bf16"
    with pytest.raises(UserError, match="mixed_precision"):
        check_dp(cfg, num_processes=1)
    cfg.training.mixed_precision = "no"
    with pytest.raises(UserError, match="one process"):
        check_dp(cfg, num_processes=2)
    bn = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    with pytest.raises(UserError, match=r"layer '1' \(BatchNorm1d\)"):
        check_layers(bn)
    check_layers(_tiny_llama())  # LlamaRMSNorm: functorch computes it
    with pytest.raises(UserError, match="training.dp.delta"):
        parse_config({"run_dir": "r", "data": {"train": {"source": "builtin:arith"}},
                      "training": {"dp": {"delta": 2}}})


@pytest.mark.integration
def test_lora_dp_changes_the_adapter(assets, tmp_path):  # noqa: F811
    """The silent no-update failure (Opacus #820): the adapter must move."""
    s = train(make_cfg(assets, tmp_path / "lora", method="lora", dp=DP,
                       lora={"r": 4, "alpha": 8, "dropout": 0.0}), progress=False)
    run = Path(s["run_dir"])
    w = load_file(str(run / "checkpoints" / s["checkpoints"][-1] / "adapter_model.safetensors"))
    b = [v for k, v in w.items() if "lora_B" in k]
    assert b and all(float(v.abs().max()) > 0 for v in b)  # lora_B starts at zero
    rec = json.loads((run / "dp.json").read_text())
    assert rec["sampling"] == "poisson" and rec["n"] == 60 and rec["delta"] == 1 / 600
    assert rec["checkpoints"][s["checkpoints"][-1]]["epsilon"] == pytest.approx(8, abs=0.1)
    assert json.loads((run / "distributed.json").read_text())["sampling"]["kind"] == "poisson"


@pytest.mark.integration
@pytest.mark.parametrize("method", ["full", "head", "lora"])
def test_dp_resumes_to_the_same_weights_and_epsilon(assets, tmp_path, monkeypatch,  # noqa: F811
                                                    method):
    kw = dict(method=method, dp=DP, save_every=3)
    a = train(make_cfg(assets, tmp_path / "a", **kw), progress=False)
    b = crash_then_resume(make_cfg(assets, tmp_path / "b", **kw), monkeypatch, 4)
    assert b["resumed_from"] == "step-000003" and a["checkpoints"] == b["checkpoints"]
    for name in a["checkpoints"]:
        ma, mb = (json.loads((Path(x["run_dir"]) / "checkpoints" / name / "finemem_ckpt.json")
                             .read_text()) for x in (a, b))
        assert ma["content_hash"] == mb["content_hash"]
        assert ma["dp_epsilon"] == mb["dp_epsilon"] > 0


def _audited(root: Path, name: str, training: dict, tier: int) -> tuple[Path, str]:
    """builtin:test on 24 arith rows + 100 coin-flip random-token canaries (seen `tier`x per
    epoch), trained, audited with the canaries probe; (run_dir, `finemem recommend` output)."""
    import yaml
    from typer.testing import CliRunner

    from finemem.cli import app

    raw = {"run_dir": str(root / name), "model": "builtin:test",
           "data": {"train": {"source": "builtin:arith", "split": "train", "n": 24},
                    "eval": {"test": {"source": "builtin:arith", "split": "test", "n": 30}},
                    "canaries": {"families": ["random"], "tiers": [tier], "per_tier": 10,
                                 "twins": 90, "inclusion": "half"}},
           "training": {"epochs": 3, "lr": 3e-3, "batch_size": 16, **training},
           "audit": {"probes": ["likelihood", "canaries"], "likelihood": {"train_sample": 8},
                     "canaries": {"n_boot": 100, "audit_guess_frac": 0.25}}}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    runner = CliRunner()
    for args in (["train", "--config", str(path), "--no-progress"],
                 ["audit", str(root / name), "--quiet"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["recommend", str(root / name)])
    assert r.exit_code == 0, r.output
    return root / name, r.output


@pytest.mark.integration
def test_audit_bound_sits_below_the_promise_and_rises_without_dp(tmp_path):
    from finemem.analysis.privacy import audit_rows

    torch.set_num_threads(1)
    run, out = _audited(tmp_path, "dp", {"dp": {"epsilon": 8, "accountant": "rdp"}}, tier=1)
    rows = audit_rows(run)
    last = [r for r in rows if r["checkpoint"] == rows[-1]["checkpoint"]][0]
    assert last["n"] == 100 and last["promised"] == pytest.approx(8, abs=0.1)
    assert all(r["bound"] <= r["promised"] for r in rows)
    assert "privacy audit at" in out and "promised epsilon" in out
    # no DP, canaries seen 4x per epoch: every guess right (50 of 50 -> 2.78 at 95%)
    run, out = _audited(tmp_path, "nodp", {"method": "full"}, tier=4)
    rows = audit_rows(run)
    assert rows[-1]["promised"] is None and rows[-1]["bound"] > 1.5
    assert "nothing was promised" in out


def test_lora_computes_only_the_adapters_per_sample_gradients():
    from finemem.train.methods import apply_method

    raw = {"run_dir": "r", "data": {"train": {"source": "builtin:arith"}},
           "training": {"method": "lora", "batch_size": 4, "dp": DP,
                        "lora": {"r": 2, "alpha": 4, "dropout": 0.0}}}
    t = parse_config(raw).training
    model = apply_method(_tiny_llama(), t)
    run = DPRun(t, n=4, total_steps=1, seed=0)
    gsm, _ = run.wrap(model, torch.optim.SGD([p for p in model.parameters()
                                              if p.requires_grad], lr=0.1))
    items = [(torch.arange(6), torch.arange(6))] * 4
    run.backward(gsm, items, 0, pad=39, device="cpu", training=t)
    named = dict(model.named_parameters())
    lora = [n for n in named if "lora_" in n]
    assert lora and all(named[n].grad_sample.shape[0] == 4 for n in lora)
    assert all(getattr(p, "grad_sample", None) is None for n, p in named.items()
               if n not in lora)


@pytest.mark.integration
def test_dp_sigkill_mid_run_resumes_to_the_same_weights_and_epsilon(assets, tmp_path):  # noqa: F811
    """`finemem train` killed (SIGKILL) between checkpoints and inside a state swap, rerun:
    the same checkpoints byte for byte and the same epsilon as an uninterrupted run."""
    import os
    import subprocess
    import sys

    import yaml

    kw = dict(method="full", dp=DP, save_every=3)
    ref = train(make_cfg(assets, tmp_path / "ref", **kw), progress=False)
    cfg = make_cfg(assets, tmp_path / "killed", **kw)
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    cmd = [sys.executable, "-m", "finemem.cli", "train", "--config", str(path), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    for kill in ("train_step:5", "state_swap:2"):  # the 2nd launch resumes from step 3
        r = subprocess.run(cmd, env={**env, "FINEMEM_KILL_AT": kill}, capture_output=True,
                           text=True)
        assert r.returncode == -9, r.stderr[-2000:]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ref["checkpoints"]:
        a, b = (json.loads((Path(d) / "checkpoints" / name / "finemem_ckpt.json").read_text())
                for d in (ref["run_dir"], cfg.run_dir))
        assert a["content_hash"] == b["content_hash"] and a["dp_epsilon"] == b["dp_epsilon"]
    da, db = (json.loads((Path(d) / "dp.json").read_text()) for d in (ref["run_dir"],
                                                                       cfg.run_dir))
    assert da["checkpoints"] == db["checkpoints"]
