"""Benchmark: the extraction probe against the naive way, on the same model and data.

    python bench/extract.py            # full run; writes its section of docs/PERFORMANCE.md
    python bench/extract.py --quick    # small CI run; writes nothing

One trained `builtin:test` run on builtin:qa (loss on the whole text). For the final checkpoint:
  * finemem: the `extraction` probe's work on members and non-members (engine teacher-forced
    pass + batched KV-cached greedy generation, batched MiniLM embeddings each text once,
    BM25 over all queries at once, the category rules), into a fresh store;
  * naive (the paper's code path): Hugging Face `generate` at batch 40 with left padding,
    then per pair: sacrebleu, rouge-score, MiniLM `encode([generation, suffix])`, exactness by
    comparing tokens, a BM25 query, and the same category rules with an encoder call per
    comparison.
Both produce the same per-example numbers (checked: exact flags and ROUGE-L agree).
Peak RSS: a child process runs the probe alone, another with the attention probe too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_run(root: Path, n: int, epochs: int) -> Path:
    from finemem.config import parse_config
    from finemem.train import train

    cfg = {"run_dir": str(root / "run"), "model": "builtin:test",
           "data": {"train": {"source": "builtin:qa", "split": "train", "n": n},
                    "eval": {"test": {"source": "builtin:qa", "split": "test", "n": n}},
                    "loss_on": "all"},
           "training": {"epochs": epochs, "lr": 3e-3, "batch_size": 8, "save_every": "epoch"},
           "audit": {"extraction": {"members": n, "nonmembers": n, "prefix_tokens": 16,
                                    "suffix_tokens": 32, "verbatim_chars": 50}}}
    (root / "run.yaml").write_text(yaml.safe_dump(cfg))
    train(parse_config(cfg))
    return root / "run"


def finemem_way(run_dir: Path, probes: list[str], store_path: Path) -> float:
    from finemem import engine
    from finemem.audit import loop
    from finemem.audit.context import AuditContext
    from finemem.audit.probes import get_probe
    from finemem.models.load import load_tokenizer
    from finemem.store import Store

    cfg = loop.open_run(run_dir)
    ref = engine.load_run_checkpoints(run_dir)[-1]
    [(ref, model)] = list(engine.iter_models(run_dir, refs=[ref], device="cpu"))
    with Store(store_path) as store:
        ctx = AuditContext(run_dir, cfg, load_tokenizer(str(run_dir / "tokenizer")), store)
        active = [get_probe(name)(cfg.audit.section(name)) for name in probes]
        for p in active:  # loading the data is untimed, as for the naive way
            p.prepare(ctx)
            if hasattr(p, "controls"):
                p.controls()  # model-free, once per audit: the naive way has none
        t0 = time.perf_counter()
        for p in active:
            p.run(ctx, ref, model)
        return time.perf_counter() - t0


def _load(run_dir: Path):
    """The run's config, tokenizer, final checkpoint and model, and an extraction probe with
    its data loaded (members, non-members, prefixes): the same items for every way timed."""
    from finemem import engine
    from finemem.audit import loop
    from finemem.audit.context import AuditContext
    from finemem.audit.probes import get_probe
    from finemem.models.load import load_tokenizer
    from finemem.store import Store

    cfg = loop.open_run(run_dir)
    tok = load_tokenizer(str(run_dir / "tokenizer"))
    ref = engine.load_run_checkpoints(run_dir)[-1]
    [(ref, model)] = list(engine.iter_models(run_dir, refs=[ref], device="cpu"))
    with tempfile.TemporaryDirectory() as d, Store(Path(d) / "s.sqlite") as store:
        probe = get_probe("extraction")(cfg.audit.section("extraction"))
        probe.prepare(AuditContext(run_dir, cfg, tok, store))
    return cfg, tok, ref, model, probe


def naive_way(run_dir: Path) -> tuple[float, dict]:
    import bm25s
    import sacrebleu
    import torch

    from finemem.metrics import extraction as ex
    from finemem.metrics.diversity import load_sentence_encoder

    _, tok, _, model, probe = _load(run_dir)  # the same items, untimed
    enc = load_sentence_encoder()
    rouge = ex._rouge()
    rules = probe.cfg.rules
    sim = lambda a, b: float(np.dot(*enc.encode([a, b], normalize_embeddings=True)))  # noqa: E731
    t0 = time.perf_counter()
    index = bm25s.BM25()
    index.index(bm25s.tokenize(probe.corpus, stopwords=None, show_progress=False),
                show_progress=False)
    out = {"t_gen": 0.0}
    for split, items in probe.items.items():
        gens = []
        t_g = time.perf_counter()
        for s in range(0, len(items), 40):
            part = [i.prefix for i in items[s:s + 40]]
            L = max(len(p) for p in part)
            ids = torch.tensor([[0] * (L - len(p)) + p for p in part])
            mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in part])
            with torch.inference_mode():
                g = model.generate(ids, attention_mask=mask, pad_token_id=0, do_sample=False,
                                   max_new_tokens=probe.cfg.suffix_tokens)
            gens += g[:, L:].tolist()
        out["t_gen"] += time.perf_counter() - t_g
        exact, rl = {}, {}
        for item, g in zip(items, gens):
            text = tok.decode(g, skip_special_tokens=True)
            exact[item.id] = float(g[:len(item.suffix)] == item.suffix)
            sacrebleu.sentence_bleu(text, [item.suffix_text])
            rl[item.id] = rouge.score(item.suffix_text, text)["rougeL"].fmeasure
            enc.encode([text, item.suffix_text], normalize_embeddings=True)
            q = bm25s.tokenize([text or "_"], stopwords=None, show_progress=False)
            docs, _ = index.retrieve(q, k=min(probe.cfg.candidates, len(probe.corpus)),
                                     show_progress=False)
            cands = [item.source] + [probe.corpus[int(i)] for i in docs[0]]
            ex.categorize(text, cands[:1], similarity=sim, rules=rules)
            ex.categorize(text, cands, similarity=sim, rules=rules)
        out[split] = {"exact": exact, "rouge_l": rl}
    return time.perf_counter() - t0, out


def engine_generation(run_dir: Path) -> float:
    """finemem's share of the work the naive way does with HF generate: the engine's
    teacher-forced exactness and batched greedy generation of the same prefixes (no cache)."""
    from finemem import engine

    _, tok, _, model, probe = _load(run_dir)
    t0 = time.perf_counter()
    for items in probe.items.values():
        engine.score(model, [(i.prefix, i.suffix) for i in items], min_k_stats=False)
        engine.generate(model, tok, [i.prefix for i in items],
                        max_new_tokens=probe.cfg.suffix_tokens)
    return time.perf_counter() - t0


def rss_child(run_dir: str, probes: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        finemem_way(Path(run_dir), probes.split(","), Path(d) / "s.sqlite")
    print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small CI run; writes nothing")
    ap.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_child:
        rss_child(*args.rss_child)
        return 0
    from bench._perf import machine, write_section
    from finemem.store import Store

    n, epochs = (24, 2) if args.quick else (96, 8)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        run = make_run(root, n, epochs)
        finemem_way(run, ["extraction"], root / "warm.sqlite")  # loads MiniLM, warms caches
        t_ours = finemem_way(run, ["extraction"], root / "ours.sqlite")
        t_naive, naive = naive_way(run)
        t_gen_ours = engine_generation(run)
        # The same per-example numbers both ways.
        from finemem.engine import load_run_checkpoints

        h = load_run_checkpoints(run)[-1].content_hash
        agree = True
        with Store(root / "ours.sqlite") as s:
            for split, v in naive.items():
                if split == "t_gen":
                    continue
                for what, theirs in (("exact_greedy_extractable", v["exact"]),
                                     ("rouge_l", v["rouge_l"])):
                    ours = {i: json.loads(x) for i, x in
                            s.get_examples(h, f"{split}/{what}", "value").items()}
                    agree &= ours.keys() == theirs.keys() and all(
                        abs(ours[i] - theirs[i]) < 1e-6 for i in ours)
        rss = {p: float(subprocess.run([sys.executable, __file__, "--rss-child", str(run), p],
                                       capture_output=True, text=True, check=True
                                       ).stdout.strip().splitlines()[-1])
               for p in ("extraction", "extraction,attention")}
    ratio = t_naive / t_ours
    rss_up = rss["extraction,attention"] / rss["extraction"] - 1
    md = "\n".join([
        "## Extraction probe (`bench/extract.py`)", "",
        f"Command: `python bench/extract.py` — `builtin:test` fine-tuned on {n} builtin:qa texts "
        f"for {epochs} epochs; the final checkpoint's {n} members and {n} non-members, prefix 16 "
        f"-> suffix 32 tokens; {machine()}; load average {load:.2f} at start.", "",
        "| Benchmark | finemem | naive way | ratio | target | met |", "|---|---|---|---|---|---|",
        f"| whole extraction probe vs HF generate (batch 40) + per-pair scoring | "
        f"{t_ours:.2f} s | {t_naive:.2f} s | {ratio:.1f}x | >= 5x | "
        f"{'yes' if ratio >= 5 else '**no**'} |",
        f"| ... of which exactness + greedy generation (engine vs HF generate, batch 40) | "
        f"{t_gen_ours:.2f} s | {naive['t_gen']:.2f} s | {naive['t_gen'] / t_gen_ours:.1f}x | | |",
        f"| peak RSS, extraction + attention vs extraction alone | "
        f"{rss['extraction,attention']:.0f} MB | {rss['extraction']:.0f} MB | "
        f"{rss_up * 100:+.1f}% | <= +10% | {'yes' if rss_up <= 0.10 else '**no**'} |",
        f"| per-example exact flags and ROUGE-L equal to the naive way's | | | "
        f"{'yes' if agree else 'no'} | yes | {'yes' if agree else '**no**'} |", "",
        "The rest of finemem's time is MiniLM: embedding each generation, true suffix and "
        "aligned candidate stretch once, in batches. On a few CPU cores that is compute-bound, "
        "so batching saves only the per-call overhead of the naive way's pair-by-pair encodes; "
        "where the whole-probe ratio misses its goal, this is why (a GPU encoder, not measured "
        "here, is where batching pays)."])
    print(md)
    failed = []
    if not agree:
        failed.append("results differ from the naive way")
    from bench._perf import at_least, at_most

    if not at_least(ratio, 5.0, args.quick):  # quick (CI): fails below 2.5x
        failed.append(f"ratio {ratio:.1f}x")
    if not at_most(1 + rss_up, 1.10, args.quick):
        failed.append(f"peak RSS +{rss_up * 100:.0f}% with attention")
    for f in failed:
        print(f"MISSED: {f}", file=sys.stderr)
    if not args.quick:
        write_section("extract", md)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
