"""engine.generate: greedy == HF generate one prompt at a time, seeded sampling independent of the
batch, filters, stop strings and first-token entropy."""

import math

import numpy as np
import pytest
import torch

from finemem.engine import generate
from finemem.engine.generate import _filter, row_seed
from finemem.errors import UserError
from test_engine_helpers import char_tokenizer, finetune, memorized, texts, tiny_llama


def _hf_greedy(model, prompt, max_new_tokens, pad_id):
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=pad_id)
    return out[0, len(prompt):].tolist()


def test_greedy_equals_hf_generate_one_at_a_time():
    model, tok, pairs, n_train = memorized()
    # prompts of several lengths (left padding inside batches), train and held-out
    prompts = [ctx[: 3 + i % 6] for i, (ctx, _) in enumerate(pairs)] + [c for c, _ in pairs]
    gens = generate(model, tok, prompts, max_new_tokens=30, batch_size=7)
    reasons = set()
    for p, (g,) in zip(prompts, gens):
        assert g.token_ids == _hf_greedy(model, p, 30, tok.pad_token_id)
        reasons.add(g.finish_reason)
    assert reasons == {"eos", "length"}
    # memorized training prompts end with eos and decode to their completion
    for (ctx, tgt), (g,) in zip(pairs[:n_train], gens[len(pairs):len(pairs) + n_train]):
        assert g.token_ids == tgt and g.finish_reason == "eos"
        assert g.text == tok.decode(tgt[:-1])


def _unsure_model():
    """A lightly trained model whose next-token distributions are broad."""
    tok = char_tokenizer()
    model = tiny_llama(len(tok), seed=5)
    seqs = [[1] + tok(t, add_special_tokens=False)["input_ids"] for t in texts(8, seed=9)]
    return finetune(model, seqs, steps=5, lr=3e-3), tok


def test_sampling_depends_on_seed_not_on_batch():
    model, tok = _unsure_model()
    prompts = [[1] + tok(t[:4], add_special_tokens=False)["input_ids"] for t in texts(6, seed=2)]
    seeds = [11, 12, 13, 14, 15, 16]
    kw = dict(max_new_tokens=12, do_sample=True, temperature=1.3, top_p=0.95, n=3)
    full = generate(model, tok, prompts, seeds=seeds, batch_size=64, **kw)
    small = generate(model, tok, prompts, seeds=seeds, batch_size=2, **kw)
    alone = generate(model, tok, [prompts[4]], seeds=[15], batch_size=1, **kw)[0]
    mixed = generate(model, tok, [prompts[4], prompts[0][:2]], seeds=[15, 99], **kw)[0]
    ids = lambda gs: [g.token_ids for g in gs]  # noqa: E731
    assert [ids(g) for g in full] == [ids(g) for g in small]
    assert ids(alone) == ids(full[4]) == ids(mixed)
    assert alone[0].seed == row_seed(15, 0) and alone[1].seed == row_seed(15, 1)
    flat = [tuple(g.token_ids) for gs in full for g in gs]
    assert len(set(flat)) == len(flat)  # 18 broad-distribution samples differ
    other = generate(model, tok, prompts, seeds=[s + 100 for s in seeds], **kw)
    assert ids(other[0]) != ids(full[0])


def test_degenerate_filters_reduce_to_greedy():
    model, tok = _unsure_model()
    prompts = [[1, 5, 6, 7], [1, 9]]
    greedy = generate(model, tok, prompts, max_new_tokens=10)
    for kw in (dict(top_k=1), dict(top_p=1e-6), dict(temperature=1e-4)):
        s = generate(model, tok, prompts, max_new_tokens=10, do_sample=True, **kw)
        assert [g[0].token_ids for g in s] == [g[0].token_ids for g in greedy], kw


def test_filter_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    np.testing.assert_allclose(_filter(logits, 1.0, 2, 1.0)[0], [0.625, 0.375, 0, 0], atol=1e-6)
    # top_p=0.8: 0.5 + 0.3 reaches 0.8, so 0.15 and 0.05 go
    np.testing.assert_allclose(_filter(logits, 1.0, 0, 0.8)[0], [0.625, 0.375, 0, 0], atol=1e-6)
    np.testing.assert_allclose(_filter(logits, 1.0, 0, 0.81)[0], [0.5 / 0.95, 0.3 / 0.95,
                                                                  0.15 / 0.95, 0], atol=1e-6)
    p2 = torch.tensor([0.5, 0.3, 0.15, 0.05]) ** 2
    np.testing.assert_allclose(_filter(logits, 0.5, 0, 1.0)[0], p2 / p2.sum(), atol=1e-6)


def test_first_token_entropy_and_greedy_copies():
    model, tok, pairs, _ = memorized()
    prompt = pairs[20][0]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([prompt])).logits[0, -1].double(), -1)
    ent = float(-(logp.exp() * logp).sum())
    gs = generate(model, tok, [prompt], max_new_tokens=3, n=3)[0]
    assert len(gs) == 3 and all(g.token_ids == gs[0].token_ids for g in gs)
    assert gs[0].token_ids is not gs[1].token_ids
    assert all(abs(g.first_token_entropy - ent) < 1e-5 for g in gs)
    assert all(g.seed is None for g in gs)


def test_stop_strings_cut_text_and_stop_early():
    model, tok, pairs, _ = memorized()
    ctx, tgt = pairs[0]
    full = tok.decode(tgt[:-1])
    stop = full[5:7]
    g = generate(model, tok, [ctx], max_new_tokens=40, stop_strings=[stop])[0][0]
    cut = full.find(stop)
    assert g.finish_reason == "stop" and g.text == full[:cut]
    assert g.token_ids == tgt[: cut + len(stop)]  # ends with the token completing the stop
    h = generate(model, tok, [ctx], max_new_tokens=4)[0][0]
    assert h.finish_reason == "length" and h.token_ids == tgt[:4]


def test_bad_arguments_are_user_errors():
    model, tok, _, _ = memorized()
    with pytest.raises(UserError, match="seeds"):
        generate(model, tok, [[1, 4]], max_new_tokens=2, seeds=[1, 2])
    with pytest.raises(UserError, match="empty prompt"):
        generate(model, tok, [[]], max_new_tokens=2)
    with pytest.raises(UserError, match="temperature"):
        generate(model, tok, [[1]], max_new_tokens=2, do_sample=True, temperature=0)
    assert math.isfinite(generate(model, tok, [[1]], max_new_tokens=1)[0][0].first_token_entropy)
