"""How the membership probe answers the attacks' needs (`finemem.audit.attacks.NEEDS`):
each is a function of nothing that asks the audit context (the engine, cached in the store)
the first time an attack calls `inp.need(...)`.

Usage (inside a probe):
    provide = providers(ctx, ref, model, examples, loss_on="completion", prefix=shots,
                        pool=freq_pool, options=opts)
    attack_scores(names, scores, None, texts, population=pop, provide=provide)
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from finemem.data.format import encode

HISTORY_SPLIT = "membership-all"  # every scored example's mean NLL, per checkpoint


def providers(ctx, ref, model, examples, *, loss_on: str, prefix=(), pool=(),
              options: dict | None = None) -> dict:
    opts = options or {}
    tok, max_len = ctx.tokenizer, ctx.cfg.data.max_length

    def base():
        return ctx.base_scores(ref, model, examples, loss_on=loss_on)

    def prefixed():
        # ReCaLL: the non-member shots as plain text before each example's own context
        text = "\n\n".join(p.prompt + p.completion for p in prefix) + "\n\n"
        pre = tok(text, add_special_tokens=False)["input_ids"]
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        pairs = []
        for ex in examples:
            e = encode(tok, ex, loss_on=loss_on, max_length=max_len)
            ctx_ids = e.context[len(bos):] if e.context[:len(bos)] == bos else e.context
            room = max(0, (max_len or 10**9) - len(e.target) - len(ctx_ids) - len(bos))
            pairs.append((bos + pre[len(pre) - min(room, len(pre)):] + ctx_ids, e.target))
        key = hashlib.sha256(repr(pre).encode()).hexdigest()[:10]
        return ctx.score_tokens(ref, model, [ex.id for ex in examples], pairs,
                                setting=f"recall:{key}:{loss_on}")

    def neighbours():
        from finemem.audit.attacks.neighbourhood import neighbour_texts, vocabulary

        k, rate = int(opts.get("neighbours", 8)), float(opts.get("swap_rate", 0.15))
        vocab = vocabulary([p.completion for p in pool] or [e.completion for e in examples])
        seed = int(opts.get("seed", 0))
        nb = []
        for ex in examples:
            for j, t in enumerate(neighbour_texts(ex.completion, vocab, k=k, rate=rate,
                                                  seed=(seed, str(ex.id)))):
                nb.append(dataclasses.replace(ex, completion=t, id=f"{ex.id}~nb{j}:{rate}"))
        sc = ctx.score(ref, model, nb, loss_on=loss_on)
        return np.array([s.nll_mean for s in sc], dtype=float).reshape(len(examples), k)

    def token_ids():
        return [np.asarray(encode(tok, ex, loss_on=loss_on, max_length=max_len).target)
                for ex in examples]

    def frequency():
        counts = np.zeros(len(tok), dtype=float)
        for ex in pool:
            ids = encode(tok, ex, loss_on=loss_on, max_length=max_len).target
            np.add.at(counts, np.asarray(ids, dtype=int), 1.0)
        return counts

    def history():
        ids = [str(ex.id) for ex in examples]
        rows = []
        for r in ctx.run_refs():
            if r.step >= ref.step or r.content_hash == ref.content_hash:
                continue
            got = ctx.get_examples(r, HISTORY_SPLIT, "mean_nll")
            if all(i in got for i in ids):
                rows.append([float(got[i]) for i in ids])
        return np.asarray(rows, dtype=float).reshape(len(rows), len(ids))

    def self_reference():
        prompts = list(pool)[: int(opts.get("spv_prompts", 32))]
        if not prompts:
            raise ValueError("the spv attack needs non-members beyond those scored to prompt "
                             "the model with; the pool has none")
        return ctx.self_reference_scores(
            ref, model, examples, prompts=prompts, loss_on=loss_on,
            max_new_tokens=int(opts.get("spv_new_tokens", 48)),
            steps=int(opts.get("spv_steps", 20)), lr=opts.get("spv_lr"),
            seed=int(opts.get("seed", 0)))

    return {"base": base, "self_reference": self_reference, "prefixed": prefixed, "neighbours": neighbours,
            "token_ids": token_ids, "frequency": frequency, "history": history}
