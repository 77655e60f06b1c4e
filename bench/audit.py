"""Benchmark: the whole audit of one checkpoint (likelihood + membership + extraction) against
the naive way, on the same model and data.

    python bench/audit.py                        # builtin:tiny; writes its PERFORMANCE.md section
    python bench/audit.py --model smollm2-135m   # a real model (skipped, saying so, when it is
                                                 # not installed); its own section
    python bench/audit.py --quick                # builtin:test, small; prints only (CI)
    python bench/audit.py --model smollm2-135m --rounds 3   # medians of 3 alternating rounds

One short fine-tune on builtin:qa (LoRA r16 for a real model, full for a builtin one), then
its last checkpoint, both ways:
  * finemem: `audit_run(RUN, probes=[likelihood, membership, extraction], checkpoints="last")`
    on a fresh copy of the run folder, timed from the call to its return: loading the model,
    the base and the data, every engine pass (shared by the probes through the per-example
    cache), the blind baseline, every bootstrap, the store's writes;
  * naive (each step as its own code path would do it): one batch-1 forward per example for the
    train and test perplexities; per text, one forward per attack (8 per text, batch 1, as
    MIMIR runs them; `bench/membership.py`); Hugging Face `generate` at batch 40 and per-pair
    text scoring for extraction (`bench/extract.py`). Timed from the start too: loading the
    model, the base, MiniLM and the data once (extraction's second load of the model is not
    timed).
The figures must agree: test perplexity, every attack's AUC, and the extraction flags.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._perf import at_least, machine, real_model_or_skip, write_section  # noqa: E402

PROBES = ["likelihood", "membership", "extraction"]
GOAL = 5.0


def make_run(root: Path, model: str, *, real: bool, n: int) -> Path:
    from finemem.config import parse_config
    from finemem.train import train

    training = ({"method": "lora", "epochs": 1, "lr": 1e-3, "batch_size": 8,
                 "gradient_checkpointing": True} if real else
                {"method": "full", "epochs": 4, "lr": 3e-3, "batch_size": 8})
    cfg = {"run_dir": str(root / "run"), "model": model, "device": "cpu",
           "data": {"train": {"source": "builtin:qa", "split": "train", "n": n},
                    "eval": {"test": {"source": "builtin:qa", "split": "test", "n": n}},
                    "max_length": 128, "loss_on": "all"},
           "training": {**training, "save_every": "epoch", "seed": 0},
           "audit": {"likelihood": {"train_sample": n},
                     "membership": {"members": n, "nonmembers": n, "n_boot": 200,
                                    "fprs": [0.01]},
                     "extraction": {"members": n, "nonmembers": n, "prefix_tokens": 16,
                                    "suffix_tokens": 32}}}
    (root / "run.yaml").write_text(yaml.safe_dump(cfg))
    train(parse_config(cfg), progress=False)
    return root / "run"


def finemem_way(run: Path, copy: Path) -> tuple[float, Path]:
    """The audit as `finemem audit RUN --probes likelihood,membership,extraction
    --checkpoints last --no-base` runs it, on a fresh copy of the trained run folder."""
    from finemem.audit.loop import audit_run

    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy, symlinks=True)
    t0 = time.perf_counter()
    audit_run(copy, probes=PROBES, checkpoints="last", base=False, progress=False, workers=1)
    return time.perf_counter() - t0, copy


def _prepared(run: Path):
    """The run's config, tokenizer, last checkpoint, model, base and the three probes with
    their data loaded: the same examples the finemem side audits."""
    from finemem import engine
    from finemem.audit import loop
    from finemem.audit.context import AuditContext
    from finemem.audit.probes import get_probe
    from finemem.models.load import load_model, load_tokenizer
    from finemem.store import Store

    cfg = loop.open_run(run)
    tok = load_tokenizer(str(run / "tokenizer"))
    ref = engine.load_run_checkpoints(run)[-1]
    [(ref, model)] = list(engine.iter_models(run, refs=[ref], device="cpu"))
    base = load_model(engine.load_run_checkpoints(run)[0].base_model, device="cpu")
    probes = {}
    with tempfile.TemporaryDirectory() as d, Store(Path(d) / "s.sqlite") as store:
        ctx = AuditContext(run, cfg, tok, store)
        for name in PROBES:
            probes[name] = get_probe(name)(cfg.audit.section(name))
            probes[name].prepare(ctx)
    return cfg, tok, model, base, probes


def _forward_logprobs(model, ctx: list[int], tgt: list[int]) -> np.ndarray:
    ids = torch.tensor([ctx + tgt[:-1]])
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return logp[len(ctx) - 1:].gather(-1, torch.tensor(tgt)[:, None]).squeeze(-1).numpy()


def naive_way(run: Path) -> tuple[float, dict]:
    from bench import extract
    from bench import membership as mb
    from finemem.audit import measures
    from finemem.data.format import encode

    from finemem.metrics.diversity import load_sentence_encoder

    t_start = time.perf_counter()
    cfg, tok, model, base, probes = _prepared(run)
    load_sentence_encoder()
    t_load = time.perf_counter() - t_start
    ml = cfg.data.max_length
    out = {}
    t0 = time.perf_counter()
    for split, examples, loss_on in probes["likelihood"].parts:   # likelihood: batch 1
        lps = []
        for e in examples:
            x = encode(tok, e, loss_on=loss_on, max_length=ml)
            lps.append(_forward_logprobs(model, x.context, x.target))
        out[f"{split}_ppl"] = measures.perplexity_stat(lps).value
    t_like = time.perf_counter() - t0
    mp = probes["membership"]                                     # membership: per attack
    exs = mp.mem + mp.non
    enc = [encode(tok, e, loss_on=mp.loss_on, max_length=ml) for e in exs]
    t1 = time.perf_counter()
    _, stats = mb.naive_way(model, base, [(x.context, x.target) for x in enc],
                            [e.completion if mp.loss_on == "completion" else e.prompt + e.completion
                             for e in exs], len(mp.mem))
    t_mem = time.perf_counter() - t1
    out["auc"] = {a: stats[a][0][2].value for a in stats}
    t_ext, ext = extract.naive_way(run)                          # extraction: HF generate
    out["exact"] = {s: v["exact"] for s, v in ext.items() if s != "t_gen"}
    out["parts"] = {"loads": t_load, "likelihood": t_like, "membership": t_mem,
                    "extraction": t_ext}
    return t_load + t_like + t_mem + t_ext, out


def compare(copy: Path, naive: dict) -> tuple[bool, list[str]]:
    """Whether the finemem audit's stored figures equal the naive way's; what differs."""
    from finemem.run import RunFolder

    with RunFolder(copy).open_store() as s:
        rows = s.metrics()
        ckpt = max(r.checkpoint for r in rows if r.split == "test")
        got = {(r.split, r.name, r.setting): r.value for r in rows if r.checkpoint == ckpt}
        ext = {}
        h = next(r.content_hash for r in s.checkpoints() if r.name == ckpt)
        for split in naive["exact"]:
            ext[split] = {i: json.loads(x) for i, x in
                          s.get_examples(h, f"{split}/exact_greedy_extractable", "value").items()}
    bad = []
    for split in ("train", "test"):
        ours = next((v for (sp, nm, _), v in got.items() if sp == split and nm == "perplexity"),
                    None)
        if ours is None or abs(ours / naive[f"{split}_ppl"] - 1) > 1e-3:
            bad.append(f"{split} perplexity {ours} vs {naive[f'{split}_ppl']:.4f}")
    for a, v in naive["auc"].items():
        ours = [val for (sp, nm, st), val in got.items()
                if sp == "membership" and nm == "membership_auc" and json.loads(st or "{}")
                .get("attack") == a]
        if not ours or abs(ours[0] - v) > 0.01:
            bad.append(f"{a} AUC {ours[:1]} vs {v:.3f}")
    for split, theirs in naive["exact"].items():
        if ext[split].keys() != theirs.keys() or any(
                abs(ext[split][i] - theirs[i]) > 1e-6 for i in theirs):
            bad.append(f"{split} exact flags")
    return not bad, bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small CI run; writes nothing")
    ap.add_argument("--model", default="builtin:tiny", help="builtin:<size> or smollm2-135m")
    ap.add_argument("--rounds", type=int, default=1,
                    help="timed rounds, each way in turn; the ratio of the medians is reported "
                         "(a shared machine's speed drifts by 10-20%% between runs)")
    args = ap.parse_args(argv)
    real = real_model_or_skip(args.model)  # exits 0, saying so, when it is not installed
    model = "builtin:test" if args.quick and not real else args.model
    n = 24 if args.quick else 64
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        t0 = time.perf_counter()
        run = make_run(root, model, real=real, n=n)
        t_train = time.perf_counter() - t0
        finemem_way(run, root / "warm")  # warms the file caches and loads MiniLM's files once
        ours, naives = [], []
        for _ in range(max(1, args.rounds)):  # alternating, so a drift hits both ways
            t, copy = finemem_way(run, root / "timed")
            ours.append(t)
            t, naive = naive_way(run)
            naives.append((t, naive))
        agree, bad = compare(copy, naive)
    t_ours = float(np.median(ours))
    t_naive = float(np.median([t for t, _ in naives]))
    naive = min(naives, key=lambda x: abs(x[0] - t_naive))[1]  # its parts, for the table
    ratio = t_naive / t_ours
    p = naive["parts"]
    rounds = ("" if len(ours) == 1 else
              f" Medians of {len(ours)} alternating rounds (finemem "
              f"{' / '.join(f'{t:.1f}' for t in ours)} s; naive "
              f"{' / '.join(f'{t:.1f}' for t, _ in naives)} s).")
    cmd = "bench/audit.py" + (f" --model {args.model}" if real else "") + (
        f" --rounds {args.rounds}" if args.rounds > 1 else "")
    md = "\n".join([
        f"## Whole audit of one checkpoint (`{cmd}`)", "",
        f"Command: `python {cmd}` — `{model}` "
        f"fine-tuned on {n} builtin:qa texts ({'LoRA r16, 1 epoch' if real else 'full, 4 epochs'}"
        f"; {t_train:.0f} s); its last checkpoint audited with likelihood + membership (the "
        f"six default attacks, blind baseline) + extraction, {n} members and {n} non-members "
        f"each; {machine()}; load average {load:.2f} at start.{rounds}", "",
        "| Benchmark | finemem | naive way | ratio | target | met |", "|---|---|---|---|---|---|",
        f"| whole audit of one checkpoint, each way from the start (loads included) | "
        f"{t_ours:.1f} s | {t_naive:.1f} s | {ratio:.1f}x | >= {GOAL:g}x | "
        f"{'yes' if ratio >= GOAL else '**no**'} |",
        f"| ... naive parts: loads / perplexities batch 1 / 8 forwards per text per attack / "
        f"HF generate batch 40 + per-pair scoring | | {p['loads']:.1f} / {p['likelihood']:.1f} "
        f"/ {p['membership']:.1f} / {p['extraction']:.1f} s | | | |",
        f"| test perplexity, every attack's AUC and the exact flags equal to the naive way's | "
        f"| | {'yes' if agree else 'no'} | yes | {'yes' if agree else '**no**'} |"])
    print(md)
    failed = [] if agree else ["results differ from the naive way: " + "; ".join(bad)]
    # CI (--quick, builtin:test, 24 + 24 examples) checks only that finemem is not slower
    # than the naive way by much (>= 0.8x): at that size fixed costs (loads, MiniLM,
    # bootstraps) dominate
    if not at_least(ratio, GOAL, args.quick, cpu_target=None if real else 1.6):
        failed.append(f"ratio {ratio:.1f}x")
    for f in failed:
        print(f"MISSED: {f}", file=sys.stderr)
    if not args.quick:
        write_section("audit" + (f":{args.model}" if real else ""), md)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
