"""engine.attention_stats against statistics computed by hand from the model's own attention
maps, padding invariance, and the attention implementation put back afterwards."""

import math

import numpy as np
import torch

from finemem.engine.attention import attention_stats
from test_engine_helpers import tiny_llama


def _by_hand(model, ctx, target, prompt_len):
    seq = torch.tensor([ctx + target[:-1]])
    model.set_attn_implementation("eager")
    with torch.no_grad():
        maps = model(input_ids=seq, output_attentions=True).attentions
    model.set_attn_implementation("sdpa")
    out = np.zeros((len(maps), maps[0].shape[1], 3))
    for layer, a in enumerate(maps):
        for head in range(a.shape[1]):
            ents, mxs, masses = [], [], []
            for q in range(len(ctx) - 1, len(ctx) + len(target) - 1):
                w = a[0, head, q, : q + 1].double().numpy()
                ent = -sum(x * math.log(x) for x in w if x > 0)
                ents.append(ent / math.log(q + 1) if q > 0 else 0.0)
                mxs.append(w.max())
                masses.append(w[:prompt_len].sum())
            out[layer, head] = [np.mean(ents), np.mean(mxs), np.mean(masses)]
    return out


def test_stats_match_a_hand_computation_and_ignore_padding():
    torch.manual_seed(0)
    model = tiny_llama(40)
    model.set_attn_implementation("sdpa")
    rng = np.random.default_rng(0)
    pairs = [(rng.integers(1, 40, size=c).tolist(), rng.integers(1, 40, size=t).tolist())
             for c, t in [(1, 6), (5, 9), (3, 3), (8, 12)]]
    batched = attention_stats(model, pairs)                            # one padded batch
    alone = [attention_stats(model, [p])[0] for p in pairs]
    for (ctx, tgt), got, one in zip(pairs, batched, alone):
        want = _by_hand(model, ctx, tgt, len(ctx))
        assert got.shape == want.shape == (model.config.num_hidden_layers,
                                           model.config.num_attention_heads, 3)
        assert np.max(np.abs(got - want)) < 1e-5
        assert np.max(np.abs(got - one)) < 1e-5
        assert np.all((got[..., 0] >= -1e-6) & (got[..., 0] <= 1 + 1e-6))
    assert model.config._attn_implementation == "sdpa"   # the fast kernels are back
