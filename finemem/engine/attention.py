"""Attention statistics, reduced inside the pass: no attention map outlives one batch.

Usage:
    stats = attention_stats(model, [(enc.context, enc.target)])   # one (layers, heads, 3)
    entropy, max_weight, prompt_mass = stats[0][..., 0], stats[0][..., 1], stats[0][..., 2]

For each pair the model reads context + target[:-1] (as `score` does); the query positions are
the ones that predict a target token. For each layer, head and such query q with keys 0..q:
  * normalised entropy  H_q = -sum_k a_qk log a_qk / log(q + 1)   (1 = uniform; 0 when q = 0)
  * largest weight      max_k a_qk
  * mass on the prompt  sum_{k < len(context)} a_qk
each averaged over the query positions. The pass runs with eager attention (fused kernels do
not return weights); the model's attention implementation is restored afterwards, so the other
probes keep the fast kernels. Rows are right-padded with no mask, as in `score`: under the
causal mask a real query never sees a pad.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from finemem.engine.score import _device, plan_batches
from finemem.metrics.attention import STATS  # noqa: F401 (the names of the last axis)

_CPU_TOKENS = 1024  # attention maps grow with the square of the length: smaller batches


@contextlib.contextmanager
def eager_attention(model):
    """Switch `model` (or the model under a peft wrapper) to eager attention for the block."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = getattr(base.config, "_attn_implementation", None)
    if before == "eager" or not hasattr(base, "set_attn_implementation"):
        yield
        return
    base.set_attn_implementation("eager")
    try:
        yield
    finally:
        base.set_attn_implementation(before)


def _reduce(attn: torch.Tensor, rows, prompt_lens) -> list[np.ndarray]:
    """(B, H, L, L) weights of one layer -> per row an (H, 3) array of the means over its
    query positions."""
    out = []
    for b, (ctx, target) in enumerate(rows):
        q = torch.arange(len(ctx) - 1, len(ctx) + len(target) - 1, device=attn.device)
        a = attn[b, :, q, :].float()  # (H, Q, L): rows of keys 0..q (the rest are 0)
        logp = torch.log(a.clamp_min(1e-30))
        ent = -(a * logp).sum(-1)  # (H, Q)
        norm = torch.log((q + 1).float()).clamp_min(1e-12)
        ent = torch.where(q > 0, ent / norm, torch.zeros_like(ent))
        mx = a.max(-1).values
        mass = a[..., :prompt_lens[b]].sum(-1)
        out.append(torch.stack([ent.mean(-1), mx.mean(-1), mass.mean(-1)], -1).cpu().numpy())
    return out


@torch.no_grad()
def attention_stats(model, pairs, *, prompt_lens: list[int] | None = None,
                    max_tokens_per_batch: int = 8192) -> list[np.ndarray]:
    """Per pair, a float32 array (layers, heads, 3) of `STATS` (see the module docstring).
    `prompt_lens` (default: each context's length) sets where the prompt ends."""
    pairs = [(list(c), list(t)) for c, t in pairs]
    prompt_lens = [len(c) for c, _ in pairs] if prompt_lens is None else list(prompt_lens)
    out: list[np.ndarray | None] = [None] * len(pairs)
    dev = _device(model)
    budget = min(max_tokens_per_batch, _CPU_TOKENS) if dev.type == "cpu" else max_tokens_per_batch
    seqs = [c + t[:-1] for c, t in pairs]
    pad = 0  # any id: pads follow a row's real tokens, which never attend to them
    was_training = model.training
    model.eval()
    try:
        with eager_attention(model):
            for batch in plan_batches([len(s) for s in seqs], budget):
                rows = [pairs[i] for i in batch]
                L = max(len(seqs[i]) for i in batch)
                ids = torch.full((len(batch), L), pad, dtype=torch.long)
                for b, i in enumerate(batch):
                    ids[b, :len(seqs[i])] = torch.tensor(seqs[i], dtype=torch.long)
                ids = ids.to(dev)
                pos = torch.arange(L, device=dev).expand(len(batch), L)
                res = model(input_ids=ids, position_ids=pos, use_cache=False,
                            output_attentions=True)
                per_layer = [_reduce(a, rows, [prompt_lens[i] for i in batch])
                             for a in res.attentions]
                del res
                for b, i in enumerate(batch):
                    out[i] = np.stack([layer[b] for layer in per_layer]).astype(np.float32)
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]

