"""`finemem audit RUN_DIR`: score every checkpoint (and the base as step 0) and store metrics.

Per checkpoint: train PPL (fixed training sample), test PPL of the reference solutions, greedy
accuracy on every graded set (test, OOD, robustness variants), first-token entropy, diversity of
k samples per prompt, and calibration. All model calls go through `finemem.engine`; what is
already in the results store is not computed again, so an interrupted audit resumes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from rich.progress import Progress, TimeElapsedColumn

from finemem import engine
from finemem.audit import measures
from finemem.audit.evalsets import ROBUSTNESS, eval_sets, train_sample
from finemem.config import AuditConfig, RunConfig
from finemem.data.format import encode, encode_prompt
from finemem.errors import UserError
from finemem.models.load import load_tokenizer
from finemem.store import Store
from finemem.train.loop import quiet_hf


def open_run(run_dir: str | Path) -> tuple[RunConfig, Store]:
    from finemem.config import load_config

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError("not a finemem run folder (no config.yaml); train it first with "
                        "`finemem train`", source=str(run_dir))
    return load_config(run_dir / "config.yaml"), Store(run_dir / "results.sqlite")


def merged_refs(run_dir: str | Path) -> list:
    """Checkpoints written by `finemem merge` into RUN_DIR/merges/, audited like any other."""
    refs = []
    for d in sorted(Path(run_dir, "merges").glob("*/finemem_ckpt.json")):
        m = json.loads(d.read_text())
        refs.append(engine.CheckpointRef(d.parent.name, int(m["step"]), float(m["epoch"]),
                                         m["kind"], str(d.parent), m["base_model"],
                                         m["content_hash"]))
    return refs


def _setting(audit: AuditConfig, what: str) -> str:
    keys = {"ppl": (), "greedy": ("max_new_tokens",),
            "sample": ("max_new_tokens", "k_samples", "temperature", "top_p")}[what]
    d = {k: getattr(audit, k) for k in keys}
    return what + ":" + hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def audit_run(run_dir: str | Path, *, audit_cfg: AuditConfig | None = None,
              device: str = "auto", progress: bool = True) -> None:
    cfg, store = open_run(run_dir)
    acfg = audit_cfg or cfg.audit
    tok = load_tokenizer(str(Path(run_dir) / "tokenizer"))
    sets = eval_sets(cfg, tok)
    train = train_sample(cfg, acfg.train_sample, tok)
    # The key covers the audit settings and the eval sets' content, so a changed eval set is
    # re-audited (unchanged examples still come from the per-example cache).
    h = hashlib.sha256(acfg.model_dump_json().encode())
    for name in sorted(sets):
        h.update(json.dumps([name] + [[e.id, e.prompt, e.completion, e.answer]
                                      for e in sets[name].examples]).encode())
    done_key = "audit_done:" + h.hexdigest()[:10]
    refs = [r for r in engine.load_run_checkpoints(run_dir) + merged_refs(run_dir)
            if not store.has_metric(r.name, "*", "audit_done", done_key)]
    if not refs:
        return
    with quiet_hf(), Progress(*Progress.get_default_columns(), TimeElapsedColumn(),
                              disable=not progress) as bar:
        task = bar.add_task("audit", total=len(refs))
        for ref, model in engine.iter_models(run_dir, refs=refs, device=device,
                                             dtype=cfg.dtype):
            def phase(what: str, ref=ref) -> None:
                bar.update(task, description=f"audit {ref.name}: {what}")

            audit_checkpoint(model, tok, ref, cfg, acfg, sets, train, store, phase=phase)
            store.put_metric(ref.name, "*", "audit_done", 1.0, setting=done_key)
            bar.advance(task)
    store.close()


def audit_checkpoint(model, tok, ref, cfg: RunConfig, acfg: AuditConfig, sets, train, store,
                     *, phase=lambda what: None) -> None:
    name, h = ref.name, ref.content_hash

    def put(split: str, metric: str, value, n=None, lo=None, hi=None):
        store.put_metric(name, split, metric, float(value), n=n, lo=lo, hi=hi)

    # Perplexities: the training sample (as trained) and the test reference solutions.
    ppl_setting = _setting(acfg, "ppl")
    for split, exs, loss_on in (("train", train, cfg.data.loss_on),
                                ("test", sets["test"].examples, "completion")):
        phase(f"{split} PPL")
        pairs = [encode(tok, ex, loss_on=loss_on, max_length=cfg.data.max_length) for ex in exs]
        scores = engine.score_cached(store, h, f"{ppl_setting}:{loss_on}", model,
                                     [ex.id for ex in exs],
                                     [(p.context, p.target) for p in pairs])
        ppl, lo, hi = measures.pooled_ppl([s.logprob for s in scores])
        put(split, "ppl", ppl, len(exs), lo, hi)

    # Greedy accuracy on every graded set.
    greedy_setting = _setting(acfg, "greedy")
    clean_acc = None
    for sname, es in sets.items():
        if not es.graded:
            continue
        phase(f"{sname} accuracy")
        gens = _generate(store, h, greedy_setting, model, tok, es.examples, acfg, n=1,
                         do_sample=False)
        correct = measures.grade([g[0].text for g in gens], [ex.answer for ex in es.examples],
                                 method=acfg.answer_extractor, pattern=acfg.answer_regex)
        rate = measures.rate(correct)
        put(sname, "accuracy", rate.value, rate.n, rate.lo, rate.hi)
        if sname == "test":
            clean_acc = correct
            ent = np.array([g[0].first_token_entropy for g in gens])
            put("test", "first_token_entropy", ent.mean(), len(ent),
                *measures.mean_ci(ent))
            greedy_answers = measures.answers([g[0].text for g in gens], acfg)
    for sname in ROBUSTNESS:
        if sname in sets and clean_acc is not None:
            acc = store.metrics(checkpoint=name, split=sname, name="accuracy")[0]["value"]
            put(sname, "accuracy_drop", float(np.mean(clean_acc)) - acc, len(clean_acc))

    # Diversity and calibration from k samples per prompt.
    if acfg.diversity_prompts and sets["test"].graded:
        phase(f"diversity ({acfg.k_samples} samples x {acfg.diversity_prompts} prompts)")
        exs = sets["test"].examples[: acfg.diversity_prompts]
        samples = _generate(store, h, _setting(acfg, "sample"), model, tok, exs, acfg,
                            n=acfg.k_samples, do_sample=True)
        div = measures.diversity([[g.text for g in row] for row in samples],
                                 [ex.answer for ex in exs], acfg,
                                 greedy_answers=greedy_answers[: len(exs)],
                                 greedy_correct=clean_acc[: len(exs)])
        for metric, (value, n, lo, hi) in div.items():
            put("test", metric, value, n, lo, hi)


def _generate(store, h, setting, model, tok, examples, acfg, *, n, do_sample):
    # Seeds come from the example ids (engine.id_seed), so samples do not depend on batching.
    prompts = [encode_prompt(tok, ex.prompt) for ex in examples]
    return engine.generate_cached(store, h, setting, model, tok, [ex.id for ex in examples],
                                  prompts, max_new_tokens=acfg.max_new_tokens, n=n,
                                  do_sample=do_sample, temperature=acfg.temperature,
                                  top_p=acfg.top_p)
