"""Training overhead: finemem's `train()` against a plain PyTorch loop, in one run.

Usage:
    python bench/train_overhead.py            # builtin:tiny, full and LoRA; writes PERFORMANCE.md
    python bench/train_overhead.py --quick    # builtin:test, a few steps, prints only (CI)
    python bench/train_overhead.py --model smollm2-135m   # a real model: LoRA, 4 steps of the
                                  # issue-18 run (skipped, saying so, when it is not installed)

Both sides do the same work from the same files: load the tokenizer, the examples and the
model, encode the examples with `finemem.data.format.encode`, run the same optimizer steps over
the same batches (same per-epoch order, dynamic padding, AdamW, scheduler, grad clipping), and
save the final weights as safetensors. finemem adds what a run needs: config checks, the run
folder (config, manifest, tokenizer), the results store and its train log, resume state
(optimizer + RNG) and the checkpoint registry. The plain side is what one writes by hand with
transformers (`model(labels=...)` for the loss). Sides alternate over several rounds after one
warm-up round of each; the ratio is of the medians. Goal: <= 1.10x.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GOAL = 1.10  # finemem train() / plain loop, worst method
sys.path.insert(0, str(ROOT))

from bench._perf import at_most, machine, real_model_or_skip, write_section  # noqa: E402
from finemem.config import RunConfig, parse_config  # noqa: E402


# A real model (`--model smollm2-135m`): issue 18's LoRA run, 96 dialog texts clipped to 128
# tokens, batch 8, gradient checkpointing (both sides), a few steps.
REAL = {"data": {"source": "builtin:dialog", "split": "train"}, "max_length": 128,
        "batch_size": 8, "gradient_checkpointing": True}
SMALL = {"data": {"source": "builtin:arith", "split": "train"}, "max_length": None,
         "batch_size": 16, "gradient_checkpointing": False}


def make_cfg(model: str, run_dir: Path, *, method: str, n: int, steps: int,
             shape: dict = SMALL) -> RunConfig:
    return parse_config({
        "run_dir": str(run_dir), "model": model, "device": "cpu",
        "data": {"train": {**shape["data"], "n": n}, "max_length": shape["max_length"]},
        "training": {"method": method, "epochs": 1, "max_steps": steps,
                     "batch_size": shape["batch_size"], "lr": 3e-4, "scheduler": "cosine",
                     "warmup_steps": 2, "save_every": steps, "seed": 0,
                     "lora": {"dropout": 0.0},
                     "gradient_checkpointing": shape["gradient_checkpointing"]}})


def plain_loop(cfg, out_dir: Path) -> float:
    """The hand-written baseline; returns the last step's loss."""
    from accelerate.utils import set_seed
    from peft import LoraConfig, get_peft_model
    from torch.nn.utils.rnn import pad_sequence
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

    from finemem.data.format import encode
    from finemem.data.loaders import load_examples
    from finemem.models.load import resolve_model
    from finemem.train.batches import epoch_batches

    t = cfg.training
    path = resolve_model(cfg.model)
    tok = AutoTokenizer.from_pretrained(path)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    examples = load_examples(cfg.data.train, tokenizer=tok)
    data = []
    for ex in examples:
        enc = encode(tok, ex, loss_on="completion", max_length=cfg.data.max_length)
        ids = torch.tensor(enc.input_ids)
        labels = ids.clone()
        labels[: len(enc.context)] = -100
        data.append((ids, labels))
    set_seed(t.seed)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if t.method == "lora":
        model = get_peft_model(model, LoraConfig(
            r=t.lora.r, lora_alpha=t.lora.alpha, lora_dropout=t.lora.dropout, task_type="CAUSAL_LM",
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                            "down_proj"]))
    if t.gradient_checkpointing:  # as the HF Trainer does it
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if t.method == "lora":
            model.enable_input_require_grads()
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=t.lr)
    sched = get_scheduler(t.scheduler, opt, num_warmup_steps=t.warmup_steps,
                          num_training_steps=t.max_steps)
    model.train()
    step, loss = 0, None
    for epoch in range(math.ceil(t.max_steps / math.ceil(len(data) / t.batch_size))):
        for idx in epoch_batches(len(data), batch_size=t.batch_size, seed=t.seed, epoch=epoch):
            if step == t.max_steps:
                break
            ids = pad_sequence([data[i][0] for i in idx], batch_first=True,
                               padding_value=pad)
            labels = pad_sequence([data[i][1] for i in idx], batch_first=True,
                                  padding_value=-100)
            mask = pad_sequence([torch.ones_like(data[i][0]) for i in idx], batch_first=True)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
    model.save_pretrained(str(out_dir))
    return float(loss.detach())


def random_model(size: str, out: Path) -> str:
    """A randomly initialised Llama with builtin:<size>'s shape and vocabulary size, using the
    builtin:test tokenizer (timing depends on the shapes, not on the weights). For machines
    where the builtin model is not built yet: `--model random:tiny`."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from finemem.models.base import SIZES
    from finemem.models.load import resolve_model

    s = SIZES[size]
    tok = AutoTokenizer.from_pretrained(resolve_model("builtin:test"))
    config = LlamaConfig(vocab_size=max(s["vocab"], len(tok)), hidden_size=s["hidden"],
                         intermediate_size=s["ffn"], num_hidden_layers=s["layers"],
                         num_attention_heads=s["heads"], num_key_value_heads=s["heads"],
                         max_position_embeddings=s["ctx"], tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return str(out)


def finemem_run(cfg) -> dict:
    from finemem.train import train

    return train(cfg, progress=False)


def measure(model: str, method: str, *, n: int, steps: int, rounds: int, tmp: Path,
            shape: dict = SMALL) -> dict:
    times = {"plain": [], "finemem": []}
    k = 0
    for r in range(rounds + 1):  # round 0 warms caches and is not counted
        for side in (("plain", "finemem") if r % 2 == 0 else ("finemem", "plain")):
            k += 1
            cfg = make_cfg(model, tmp / f"{method}-{k}", method=method, n=n, steps=steps,
                           shape=shape)
            t0 = time.perf_counter()
            if side == "plain":
                plain_loop(cfg, tmp / f"plain-{k}")
            else:
                finemem_run(cfg)
            dt = time.perf_counter() - t0
            if r > 0:
                times[side].append(dt)
            print(f"  {method:5s} round {r} {side:8s} {dt:7.2f}s", flush=True)
    med = {s: statistics.median(v) for s, v in times.items()}
    return {"method": method, "plain": med["plain"], "finemem": med["finemem"],
            "ratio": med["finemem"] / med["plain"], "times": times}


def main() -> None:
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="builtin:test, few steps, no doc write")
    ap.add_argument("--model", default=None)
    ap.add_argument("--methods", default="full,lora")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (fewer threads are steadier on a busy machine)")
    ap.add_argument("--write", action="store_true", help="write docs/PERFORMANCE.md (default "
                                                         "unless --quick)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    model = a.model or ("builtin:test" if a.quick else "builtin:tiny")
    real = real_model_or_skip(model)  # exits 0, saying so, when the real model is absent
    shape = REAL if real else SMALL
    # quick: enough steps that fixed costs do not dominate; a real model's step is seconds
    steps = a.steps or ((1 if a.quick else 4) if real else (40 if a.quick else 48))
    rounds = a.rounds or (1 if real else (2 if a.quick else 3))
    methods = "lora" if real and a.methods == "full,lora" else a.methods
    bs = shape["batch_size"]
    n = steps * bs
    from finemem.models.load import resolve_model

    label = model
    with tempfile.TemporaryDirectory() as d:
        if model.startswith("random:"):
            model = random_model(model.split(":", 1)[1], Path(d) / "model")
            label = f"a random-init Llama shaped like builtin:{label.split(':', 1)[1]}"
        resolve_model(model)  # build the builtin once, outside the timing
        print(f"train overhead: {label}, {steps} steps of batch {bs}, {rounds} rounds; "
              f"{machine()}")
        rows = [measure(model, method, n=n, steps=steps, rounds=rounds, tmp=Path(d),
                        shape=shape) for method in methods.split(",")]
    lines = ["| method | plain PyTorch (s) | finemem (s) | ratio |", "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['plain']:.2f} | {r['finemem']:.2f} | "
                     f"{r['ratio']:.3f}x |")
        print(f"{r['method']}: plain {r['plain']:.2f}s  finemem {r['finemem']:.2f}s  "
              f"ratio {r['ratio']:.3f}x (goal <= {GOAL:.2f}x)")
    worst = max(r["ratio"] for r in rows)
    if a.quick and not at_most(worst, GOAL, quick=True):  # CI: a collapse, not noise
        sys.exit(f"MISSED: training overhead {worst:.2f}x, more than 2x the goal {GOAL:.2f}x")
    if a.quick and not a.write:
        return
    cmd = "python bench/train_overhead.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    load = os.getloadavg()[1]
    data = shape["data"]["source"]
    clip = f", clipped to {shape['max_length']} tokens" if shape["max_length"] else ""
    gc = ", gradient checkpointing on both sides" if shape["gradient_checkpointing"] else ""
    name = "train_overhead" + (f":{model}" if real else "")
    write_section(name, "\n".join([
        f"## Training overhead{f' on {model}' if real else ''}", "",
        f"finemem `train()` against a hand-written PyTorch + transformers loop on {label}: "
        f"the same examples (`{data}`, n={n}{clip}), batches ({bs}, same order), {steps} "
        f"AdamW steps (cosine, warmup 2, clipping 1.0{gc}) and a final safetensors save. "
        "Each side counts everything from reading the model to the saved weights; finemem's "
        "extra work is the run folder, results store, resume state and checkpoint registry"
        + ("; finemem applies the output head only to the loss-bearing positions, the plain "
           "loop to all (`model(labels=...)`)" if real else "") + ". Median of "
        f"{rounds} alternating rounds after one warm-up round.", "",
        *lines, "",
        f"Worst ratio: **{worst:.3f}x** (goal <= {GOAL:.2f}x). Machine: {machine()}; load "
        f"average {load:.1f} during the run (other jobs shared the cores).", "",
        f"Reproduce: `{cmd.strip()}`"]))
    print(f"wrote docs/PERFORMANCE.md (section {name})")

if __name__ == "__main__":
    main()
