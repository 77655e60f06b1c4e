"""Engine benchmarks: finemem.engine against the naive way, each pair measured in one run on the
same fine-tuned model and data.

Usage:
    python bench/engine.py               # full run; writes the "engine" section of docs/PERFORMANCE.md
    python bench/engine.py --quick       # CI smoke run: smaller, prints only; fails on a
                                         # target missed by more than 2x
    python bench/engine.py --model random   # a random ~1M-parameter Llama instead of builtin:tiny

(a) exact extraction of 32-token suffixes after 32-token prefixes: one teacher-forced pass vs
    Hugging Face greedy `generate` per sample and in batches of 64; the flags must agree 100%;
(b) scoring throughput (log p, argmax, entropy; then + Min-K%++ stats) vs a bare
    `model(input_ids)` forward over the same prebuilt padded batches;
(c) 4 sampled continuations of each of 64 prompts vs per-sample HF `generate`;
(d) peak RSS scoring 1k vs 10k examples, each in a fresh subprocess.
The model is fine-tuned first (cached under the temp dir) on random 64-token sequences, a quarter
of them repeated 8x, so that it memorized part of them. Timings are the best of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._perf import best  # noqa: E402
from finemem.engine import generate, score  # noqa: E402
from finemem.engine.score import batch_budget, plan_batches  # noqa: E402

PREFIX = SUFFIX = 32
VERSION = 1
LOAD = [0.0, 0.0, 0.0]  # os.getloadavg() when the run started


def _random_base(path: Path) -> None:
    """A random ~1M-parameter Llama with a 512-token word-level tokenizer."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<bos>", "<eos>", "<unk>"]
                                        + [f"t{i}" for i in range(508)])}
    tk = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>",
                            pad_token="<pad>", unk_token="<unk>").save_pretrained(path)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=344,
                      num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=256,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(path)


def prepare_real(model_spec: str, n: int) -> Path:
    """A real pretrained model as it is (no fine-tuning: 135M parameters take minutes a step
    on a CPU) and the first 64 tokens of n builtin:dialog texts, which it has never seen."""
    from finemem.data.tasks import get_task
    from finemem.models.load import load_tokenizer, resolve_model

    base = resolve_model(model_spec)
    out = Path(tempfile.mkdtemp(prefix="finemem-bench-engine-real-"))
    tok = load_tokenizer(base)
    texts = [e.prompt + e.completion for e in get_task("dialog").generate("train", n=n, seed=0)]
    seqs = [tok(t, add_special_tokens=False)["input_ids"][:PREFIX + SUFFIX] for t in texts]
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    (out / "model").symlink_to(base)
    (out / "data.json").write_text(json.dumps({"seqs": seqs, "bos": bos}))
    return out


def prepare(model_spec: str, n: int, steps: int) -> Path:
    """Fine-tune the base on n random sequences (a quarter repeated 8x); cached by settings."""
    from finemem.models.load import load_model, load_tokenizer, resolve_model

    base = "random" if model_spec == "random" else resolve_model(model_spec)
    key = hashlib.sha256(json.dumps([base, n, steps, VERSION]).encode()).hexdigest()[:12]
    out = Path(tempfile.gettempdir()) / "finemem-bench-engine" / key
    if (out / "data.json").is_file():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if base == "random":
        _random_base(tmp / "base")
        base = str(tmp / "base")
    tok, model = load_tokenizer(base), load_model(base, device="cpu")
    allowed = np.array([i for i in range(min(len(tok), 1024)) if i not in tok.all_special_ids])
    rng = np.random.default_rng(0)
    seqs = rng.choice(allowed, size=(n, PREFIX + SUFFIX)).tolist()
    train = torch.tensor([[tok.bos_token_id] + s for s in seqs + seqs[: n // 4] * 7])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    t0 = time.time()
    for step in range(steps):
        batch = train[torch.randint(len(train), (32,))]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"  fine-tune step {step}: loss {loss.item():.3f}", flush=True)
    print(f"  fine-tuned {steps} steps in {time.time() - t0:.0f}s", flush=True)
    model.save_pretrained(tmp / "model")
    tok.save_pretrained(tmp / "model")
    (tmp / "data.json").write_text(json.dumps({"seqs": seqs, "bos": tok.bos_token_id}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out




def hf_generate(model, prompts, *, batch: int, **kw):
    outs = []
    for s in range(0, len(prompts), batch):
        part = prompts[s:s + batch]
        L = max(len(p) for p in part)
        ids = torch.tensor([[0] * (L - len(p)) + p for p in part])
        mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in part])
        with torch.inference_mode():
            gen = model.generate(ids, attention_mask=mask, pad_token_id=0, **kw)
        outs += gen[:, L:].tolist()
    return outs


def bench_extraction(model, seqs, bos, repeat):
    pairs = [([bos] + s[:PREFIX], s[PREFIX:]) for s in seqs]
    scores, t_ours = best(lambda: score(model, pairs, min_k_stats=False), repeat)
    flags = [s.exact for s in scores]
    prompts = [c for c, _ in pairs]
    kw = dict(max_new_tokens=SUFFIX, do_sample=False)
    one, t_one = best(lambda: hf_generate(model, prompts, batch=1, **kw), 1)
    many, t_many = best(lambda: hf_generate(model, prompts, batch=64, **kw), repeat)
    agree = np.mean([f == (a == t) == (b == t) for f, a, b, (_, t) in zip(flags, one, many, pairs)])
    return dict(n=len(pairs), exact=float(np.mean(flags)), agree=float(agree), t_ours=t_ours,
                t_one=t_one, t_many=t_many)


def bench_throughput(model, seqs, bos, repeat, budget=16384):
    rng = np.random.default_rng(1)
    pairs = []
    for _ in range(4):
        for s in seqs:
            cut, end = int(rng.integers(1, PREFIX)), int(rng.integers(PREFIX + 1, len(s) + 1))
            pairs.append(([bos] + s[:cut], s[cut:end]))
    tokens = sum(len(c) + len(t) for c, t in pairs)
    lengths = [len(c) + len(t) for c, t in pairs]
    batches = []
    for b in plan_batches([n - 1 for n in lengths], batch_budget(model, budget)):  # score's
        L = max(lengths[i] for i in b)  # the bare forward reads every token
        batches.append(torch.tensor([pairs[i][0] + pairs[i][1] + [0] * (L - lengths[i])
                                     for i in b]))

    def bare():
        with torch.inference_mode():
            for ids in batches:
                model(input_ids=ids)

    _, t_bare = best(bare, repeat)
    _, t_fast = best(lambda: score(model, pairs, max_tokens_per_batch=budget,
                                   min_k_stats=False), repeat)
    _, t_mink = best(lambda: score(model, pairs, max_tokens_per_batch=budget), repeat)
    return dict(n=len(pairs), tokens=tokens, t_bare=t_bare, t_fast=t_fast, t_mink=t_mink)


def bench_sampling(model, tok, seqs, bos, n_prompts, repeat):
    prompts = [[bos] + s[:PREFIX] for s in seqs[:n_prompts]]
    kw = dict(max_new_tokens=SUFFIX, do_sample=True, temperature=1.0, top_p=0.95)
    gens, t_ours = best(lambda: generate(model, tok, prompts, n=4, seeds=list(range(len(prompts))),
                                         **kw), repeat)
    rows = [p for p in prompts for _ in range(4)]
    torch.manual_seed(0)
    _, t_hf = best(lambda: hf_generate(model, rows, batch=1, top_k=0, **kw), 1)
    n_tok = sum(len(g.token_ids) for gs in gens for g in gs)
    return dict(rows=len(rows), tokens=n_tok, t_ours=t_ours, t_hf=t_hf)


def rss_child(model_dir: str, n: int) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    rng = np.random.default_rng(2)
    seqs = rng.integers(4, 500, size=(n, PREFIX + SUFFIX)).tolist()
    pairs = [([1] + s[:PREFIX], s[PREFIX:]) for s in seqs]
    score(model, pairs[:8])  # warm up
    base = _status_mb("VmRSS")
    reset = Path("/proc/self/clear_refs")
    if reset.exists():
        reset.write_text("5")  # Linux: reset VmHWM, so the peak below is the scoring's
    out = score(model, pairs)
    if len(out) != n:
        raise SystemExit(f"scored {len(out)} of {n}")
    peak = _status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": n, "base_mb": base, "peak_rss_mb": peak}))


def _status_mb(key: str) -> float:
    status = Path("/proc/self/status")
    if not status.exists():
        return 0.0
    for line in status.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def bench_rss(model_dir: Path, sizes):
    peaks = {}
    for n in sizes:
        res = subprocess.run([sys.executable, __file__, "--rss-child", str(n), "--model-dir",
                              str(model_dir)], capture_output=True, text=True, check=True)
        peaks[n] = json.loads(res.stdout.strip().splitlines()[-1])
    return peaks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small CI run; writes nothing")
    ap.add_argument("--model", default="builtin:tiny", help="builtin:<size> or 'random'")
    ap.add_argument("--repeat", type=int, default=3, help="timed repeats (best is kept)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        rss_child(args.model_dir, args.rss_child)
        return 0
    from bench._perf import real_model_or_skip

    real = real_model_or_skip(args.model)  # exits 0, saying so, when it is not installed
    n, steps = (32, 40) if args.quick else (256, 200)
    if real:  # a 135M model: fewer examples, the same ratios
        n = 8 if args.quick else 64
    repeat = 1 if args.quick else args.repeat
    spec = "random" if args.quick and args.model == "builtin:tiny" else args.model
    LOAD[:] = os.getloadavg()
    folder = prepare_real(spec, n) if real else prepare(spec, n, steps)
    data = json.loads((folder / "data.json").read_text())
    seqs, bos = data["seqs"], data["bos"]
    from finemem.models.load import load_model, load_tokenizer

    model, tok = load_model(str(folder / "model"), device="cpu"), load_tokenizer(
        str(folder / "model"))
    print(f"model {spec}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, "
          f"{n} examples, {torch.get_num_threads()} threads", flush=True)
    score(model, [([bos] + seqs[0][:PREFIX], seqs[0][PREFIX:])])  # warm up both paths
    hf_generate(model, [[bos] + seqs[0][:PREFIX]], batch=1, max_new_tokens=2, do_sample=False)
    a = bench_extraction(model, seqs, bos, repeat)
    print("(a)", a, flush=True)
    b = bench_throughput(model, seqs, bos, repeat)
    print("(b)", b, flush=True)
    c = bench_sampling(model, tok, seqs, bos, 8 if args.quick or real else 64, repeat)
    print("(c)", c, flush=True)
    sizes = (100, 1000) if args.quick or real else (1000, 10000)
    d = bench_rss(folder / "model", (20, 200) if args.quick and real else sizes)
    print("(d)", d, flush=True)
    md = report(a, b, c, d, spec, repeat)
    print(md)
    # Targets of the full run; --quick (CI) fails when one is missed by more than 2x. The
    # batched-generate target is not met on a few CPU cores even in the full run (2-3x, see
    # docs/PERFORMANCE.md): CI checks its CPU floor (not slower than batched generate).
    from bench._perf import at_least, at_most

    q = args.quick
    checks = {"extraction vs one-at-a-time generate": at_least(a["t_one"] / a["t_ours"], 30, q),
              "extraction vs batched generate": at_least(a["t_many"] / a["t_ours"], 10, q,
                                                         cpu_target=2.0),
              "extraction agrees with generate": a["agree"] == 1.0,
              "scoring vs bare forward": at_least(b["t_bare"] / b["t_fast"], 0.8, q),
              "sampling vs HF generate": at_least(c["t_hf"] / c["t_ours"], 4, q),
              "peak RSS flat in the number of examples":
                  at_most(d[max(d)]["peak_rss_mb"] / d[min(d)]["peak_rss_mb"], 1.1, q)}
    failed = [k for k, ok in checks.items() if not ok]
    for k in failed:
        print(f"MISSED: {k}" + (" (by more than 2x)" if args.quick else ""), file=sys.stderr)
    if not args.quick:
        from bench._perf import write_section

        write_section("engine" + (f":{spec}" if real else ""), md)
    return 1 if failed else 0


def report(a, b, c, d, spec, repeat) -> str:
    from bench._perf import machine

    n1, n2 = sorted(d)
    cmd = "python bench/engine.py" + ("" if spec == "builtin:tiny" else f" --model {spec}")
    yes = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    r_one, r_many = a["t_one"] / a["t_ours"], a["t_many"] / a["t_ours"]
    r_b, r_m = b["t_bare"] / b["t_fast"], b["t_bare"] / b["t_mink"]
    p1, p2 = d[n1]["peak_rss_mb"], d[n2]["peak_rss_mb"]
    r_c, growth = c["t_hf"] / c["t_ours"], p2 / p1 - 1
    tps = lambda t: f"{b['tokens'] / t:,.0f} tok/s"  # noqa: E731
    from finemem.models.named import NAMED

    real = spec in NAMED
    what = (f"the pretrained `{spec}` as it is, on the first 64 tokens of {a['n']} "
            "builtin:dialog texts" if real else f"model `{spec}` fine-tuned on {a['n']} random "
            "64-token sequences (a quarter repeated 8x)")
    return "\n".join([
        f"## Engine (`finemem.engine`){f' on {spec}' if real else ''}", "",
        f"Command: `{cmd}` — {what}; {machine()}; load average {LOAD[0]:.2f} at start. "
        f"Times are the best of {repeat} runs "
        "(per-sample HF generate: one run).", "",
        "| Benchmark | finemem | naive way | ratio | target | met |", "|---|---|---|---|---|---|",
        f"| (a) exact extraction, {a['n']} examples, 32+32 tokens vs per-sample HF generate | "
        f"{a['t_ours']:.3f} s | {a['t_one']:.2f} s | {r_one:.0f}x | >= 30x | {yes(r_one >= 30)} |",
        f"| (a) ... vs batched HF generate (64 per batch) | {a['t_ours']:.3f} s | "
        f"{a['t_many']:.2f} s | {r_many:.0f}x | >= 10x | {yes(r_many >= 10)} |",
        f"| (a) flags agree with both (exact share {a['exact']:.0%}) | | | "
        f"{a['agree']:.0%} | 100% | {yes(a['agree'] == 1)} |",
        f"| (b) scoring throughput, log p + argmax + entropy, {b['n']} pairs | "
        f"{tps(b['t_fast'])} | {tps(b['t_bare'])} (bare forward) | {r_b:.2f}x | >= 0.8x | "
        f"{yes(r_b >= 0.8)} |",
        f"| (b) ... + Min-K%++ mu, sigma | {tps(b['t_mink'])} | {tps(b['t_bare'])} | "
        f"{r_m:.2f}x | (stats cost {b['t_mink'] / b['t_fast'] - 1:+.0%}) | |",
        f"| (c) sampling 4 x {c['rows'] // 4} prompts, 32 new tokens, top-p 0.95 | "
        f"{c['t_ours']:.2f} s | {c['t_hf']:.2f} s | {r_c:.0f}x | >= 4x | {yes(r_c >= 4)} |",
        f"| (d) peak RSS scoring {n2:,} vs {n1:,} examples | {p2:.0f} MB | {p1:.0f} MB | "
        f"{growth:+.1%} | <= +10% | {yes(growth <= 0.10)} |",
        "", "(a) vs batched generate: the teacher-forced pass does the same arithmetic as "
        "batched greedy decoding (every row reads all 64 positions once either way); it saves "
        "the 32 sequential decode steps' overhead and KV-cache traffic, which dominate where "
        "decode steps are latency-bound (typically a GPU; not measured here) but are a small "
        "part on a few CPU cores, where batch-64 decoding is already compute-bound."
        if r_many < 10 else "",
        "", f"(d) is the process's peak while scoring (high-water mark reset after loading): "
        f"{p1 - d[n1]['base_mb']:+.0f} MB over the loaded process for {n1:,} examples, "
        f"{p2 - d[n2]['base_mb']:+.0f} MB for {n2:,} (results included).",
    ])


if __name__ == "__main__":
    sys.exit(main())
