"""Membership benchmark: all six attacks for one checkpoint from finemem's one batched engine
pass (plus the base's) against the per-sample way (one forward pass per text per attack, as
MIMIR runs its attacks), same fine-tuned model and data; the attack scores must agree.

Usage:
    python bench/membership.py            # full run; writes the "membership" section of docs/PERFORMANCE.md
    python bench/membership.py --quick    # CI smoke run: smaller, prints only; fails when the
                                          # ratio misses its target by more than 2x

Model: `builtin:test` fine-tuned 4 epochs on arith problems (cached under the temp dir);
members are its training problems, non-members the task's test problems. The naive way runs,
per text: loss, zlib, Min-K%, Min-K%++ (one forward each, full log-softmax), reference and
RMIA (a forward under the model and one under the base each): 8 forward passes of batch 1.
finemem: `engine.score` over all texts under the model (log p, argmax, Min-K%++ mu/sigma in
one pass) and under the base, then every attack and its AUC / TPR from those arrays.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from finemem.audit.attacks import attack_names, attack_scores, separation  # noqa: E402
from bench._perf import best  # noqa: E402
from finemem.engine import score  # noqa: E402
from finemem.metrics import membership as mi  # noqa: E402

LOAD = [0.0, 0.0, 0.0]
ATTACKS = attack_names(default_only=True)  # the six the per-sample way below computes


def prepare(n: int) -> Path:
    """A builtin:test run fine-tuned on n arith problems (cached by n)."""
    from finemem.config import parse_config
    from finemem.train import train

    key = hashlib.sha256(json.dumps(["membership-bench", n, 1]).encode()).hexdigest()[:12]
    run = Path(tempfile.gettempdir()) / "finemem-bench-membership" / key
    if list((run / "checkpoints").glob("step-*")):
        return run
    cfg = parse_config({"run_dir": str(run), "model": "builtin:test",
                        "data": {"train": {"source": "builtin:arith", "split": "train", "n": n},
                                 "eval": {"test": {"source": "builtin:arith", "split": "test",
                                                   "n": n}}},
                        "training": {"epochs": 4, "lr": 3e-3, "batch_size": 16,
                                     "save_every": 10_000}})
    train(cfg, force=True, progress=False)
    return run




def finemem_way(model, base, pairs, texts, n_mem):
    pop = np.arange(n_mem, len(pairs))
    s = score(model, pairs)
    b = score(base, pairs, min_k_stats=False)
    att = attack_scores(ATTACKS, s, b, texts, population=pop)
    stats = {a: separation(a, att[a][:n_mem], att[a][n_mem:], fprs=[0.01], n_boot=200)
             for a in ATTACKS}
    return att, stats


def _one_pass(model, ctx, tgt):
    """One unbatched forward: per-target-token log p, and mu, sigma of log p (full softmax)."""
    ids = torch.tensor([ctx + tgt[:-1]])
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)  # (L, V)
    rows = logp[len(ctx) - 1:]                                             # (T, V)
    lp = rows.gather(-1, torch.tensor(tgt)[:, None]).squeeze(-1)
    p = rows.exp()
    mu = (p * rows).sum(-1)
    sigma = (p * (rows - mu[:, None]) ** 2).sum(-1).sqrt()
    return lp.numpy(), mu.numpy(), sigma.numpy()


def naive_way(model, base, pairs, texts, n_mem):
    """Per text, per attack, its own forward pass(es), as MIMIR's attacks do."""
    per = {a: [] for a in ATTACKS}
    ref_lp, tgt_lp = [], []
    for (ctx, tgt), text in zip(pairs, texts):
        lp, _, _ = _one_pass(model, ctx, tgt)
        per["loss"].append(mi.loss_attack([lp])[0])
        lp, _, _ = _one_pass(model, ctx, tgt)
        per["zlib"].append(mi.zlib_attack([lp], [text])[0])
        lp, _, _ = _one_pass(model, ctx, tgt)
        per["min_k"].append(mi.min_k_attack([lp])[0])
        lp, mu, sd = _one_pass(model, ctx, tgt)
        per["min_k_pp"].append(mi.min_k_pp_attack([lp], [mu], [sd])[0])
        lp, rlp = _one_pass(model, ctx, tgt)[0], _one_pass(base, ctx, tgt)[0]
        per["reference"].append(mi.reference_attack([lp], [rlp])[0])
        lp, rlp = _one_pass(model, ctx, tgt)[0], _one_pass(base, ctx, tgt)[0]
        tgt_lp.append(lp.mean())
        ref_lp.append(rlp.mean())
    m, r = np.array(tgt_lp), np.array(ref_lp)
    pop = np.arange(n_mem, len(pairs))
    self_idx = np.full(len(pairs), -1)
    self_idx[pop] = np.arange(pop.size)
    per["rmia"] = mi.rmia_attack(m, r, m[pop], r[pop], self_index=self_idx)
    att = {a: np.asarray(v, dtype=float) for a, v in per.items()}
    stats = {a: separation(a, att[a][:n_mem], att[a][n_mem:], fprs=[0.01], n_boot=200)
             for a in ATTACKS}
    return att, stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small CI run; writes nothing")
    ap.add_argument("--repeat", type=int, default=3, help="timed repeats of finemem's way")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n = 40 if args.quick else 200
    LOAD[:] = os.getloadavg()
    run = prepare(n)
    from finemem import engine
    from finemem.audit.members import members, nonmembers
    from finemem.config import load_config
    from finemem.data.format import encode
    from finemem.models.load import load_model, load_tokenizer

    cfg = load_config(run / "config.yaml")
    tok = load_tokenizer(str(run / "tokenizer"))
    mem = [e for e, _ in members(run, cfg, tok)]
    non = nonmembers(cfg, tok, members=mem)
    exs = mem + non
    enc = [encode(tok, e) for e in exs]
    pairs = [(x.context, x.target) for x in enc]
    texts = [e.completion for e in exs]
    refs = engine.load_run_checkpoints(run)
    base = load_model(refs[0].base_model, device="cpu")
    model = load_model(refs[-1].path, device="cpu")
    print(f"{len(mem)} members + {len(non)} non-members, checkpoint {refs[-1].name}, "
          f"{torch.get_num_threads()} threads", flush=True)
    finemem_way(model, base, pairs[:4], texts[:4], 2)  # warm up both paths
    naive_way(model, base, pairs[:2], texts[:2], 1)
    (ours, ours_stats), t_ours = best(lambda: finemem_way(model, base, pairs, texts, len(mem)),
                                      1 if args.quick else args.repeat)
    (naive, naive_stats), t_naive = best(lambda: naive_way(model, base, pairs, texts, len(mem)),
                                         1)
    diff = max(float(np.nanmax(np.abs(ours[a] - naive[a]))) for a in ATTACKS)
    auc = {a: ours_stats[a][0][2] for a in ATTACKS}
    auc_naive = {a: naive_stats[a][0][2].value for a in ATTACKS}
    agree = diff < 1e-3 and all(abs(auc[a].value - auc_naive[a]) < 0.01 for a in ATTACKS)
    ratio = t_naive / t_ours
    md = report(len(mem), len(non), t_ours, t_naive, ratio, diff, auc, ours_stats,
                1 if args.quick else args.repeat, args.threads)
    print(md)
    from bench._perf import at_least

    checks = {"finemem's pass vs per-sample passes": at_least(ratio, 5.0, args.quick),
              "attack scores agree with the per-sample way": agree}
    failed = [k for k, ok in checks.items() if not ok]
    for k in failed:
        print(f"MISSED: {k}" + (" (by more than 2x)" if args.quick and "vs" in k else ""),
              file=sys.stderr)
    if not args.quick:
        from bench._perf import write_section

        write_section("membership", md)
    return 1 if failed else 0


def report(n_mem, n_non, t_ours, t_naive, ratio, diff, auc, stats, repeat, threads) -> str:
    from bench._perf import machine

    rows = []
    for a in ATTACKS:
        st = auc[a]
        tpr = next((x[2] for x in stats[a] if x[0] == "membership_tpr_at_fpr"), None)
        t = (f"{tpr.value:.3f} [{tpr.lo:.2f}, {tpr.hi:.2f}]" if tpr else "refused")
        rows.append(f"| {a} | {st.value:.3f} [{st.lo:.2f}, {st.hi:.2f}] | {t} |")
    return "\n".join([
        "## Membership inference (`membership` probe)", "",
        f"Command: `python bench/membership.py"
        f"{f' --threads {threads}' if threads else ''}` — `builtin:test` fine-tuned 4 epochs on "
        f"{n_mem} arith problems; {n_mem} members vs {n_non} test problems; all six attacks "
        f"(loss, zlib, Min-K%, Min-K%++, reference, RMIA) with AUC (bootstrap interval) and "
        f"TPR at 1% FPR; {machine()}; load average {LOAD[0]:.2f} at start. finemem: best of "
        f"{repeat} runs; the per-sample way: one run.", "",
        "| Benchmark | finemem | naive way | ratio | target | met |", "|---|---|---|---|---|---|",
        f"| 6 attacks, one checkpoint: one batched engine pass (+ the base's) vs one forward "
        f"per text per attack (8 per text, batch 1, as MIMIR) | {t_ours:.2f} s | "
        f"{t_naive:.2f} s | {ratio:.1f}x | >= 5x | {'yes' if ratio >= 5 else '**no**'} |", "",
        f"Attack scores agree with the per-sample way to {diff:.1e} (max abs difference). "
        "Measured on the last checkpoint:", "",
        "| attack | AUC [95% CI] | TPR at 1% FPR [95% CI] |", "|---|---|---|", *rows])


if __name__ == "__main__":
    sys.exit(main())
