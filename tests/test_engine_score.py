"""engine.score: against a hand-written per-pair loop, padding invariance, greedy-extraction flags
against Hugging Face generate, the argmax tie rule, and the derived scores."""

import importlib
import math

import numpy as np
import pytest
import torch

from finemem.engine import TokenScores, score
from finemem.engine.score import plan_batches
from finemem.errors import UserError
from test_engine_helpers import (char_tokenizer, encode_all, memorized, reference_scores, texts,
                                 tiny_llama)


def _max_err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def test_scores_match_reference_loop_within_1e_5():
    model, _, pairs, _ = memorized()
    ref = reference_scores(model, pairs)
    got = score(model, pairs, max_tokens_per_batch=256)
    assert len(got) == len(pairs)
    for s, r, (_, tgt) in zip(got, ref, pairs):
        assert s.logprob.dtype == np.float32 and s.correct.dtype == bool
        assert s.logprob.shape == (len(tgt),)
        for name in ("logprob", "entropy", "mu", "sigma"):
            assert _max_err(getattr(s, name), r[name]) < 1e-5, name
        assert np.array_equal(s.correct, r["correct"])
        nll = -r["logprob"].sum()
        assert abs(s.nll_sum - nll) < 1e-4
        assert abs(s.nll_mean - nll / len(tgt)) < 1e-5
        assert abs(s.ppl - math.exp(nll / len(tgt))) < 1e-5 * s.ppl


def test_padding_and_batch_composition_do_not_change_scores():
    model, _, pairs, _ = memorized()
    one = score(model, pairs, max_tokens_per_batch=1)  # every pair alone
    many = score(model, pairs, max_tokens_per_batch=64 * 64)  # all 32 in one padded batch
    sub = score(model, pairs[5:9] + pairs[:2], max_tokens_per_batch=10_000)
    for a, b in zip(one, many):
        assert _max_err(a.logprob, b.logprob) < 1e-5 and np.array_equal(a.correct, b.correct)
        assert _max_err(a.sigma, b.sigma) < 1e-5
    for a, b in zip(sub, many[5:9] + many[:2]):  # input order is kept
        assert _max_err(a.logprob, b.logprob) < 1e-5


def test_plan_batches_respects_budget_and_sorts_longest_first():
    lengths = [5, 40, 12, 40, 3, 100]
    batches = plan_batches(lengths, 80)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert batches[0] == [5]  # 100 > budget: a batch of its own
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 80
    assert batches[1] == [1, 3]  # two 40s = 80 tokens


def test_exact_flags_agree_with_hf_greedy_generate():
    model, tok, pairs, n_train = memorized()
    got = score(model, pairs)
    n_exact = 0
    for s, (ctx, tgt) in zip(got, pairs):
        out = model.generate(torch.tensor([ctx]), attention_mask=torch.ones(1, len(ctx),
                             dtype=torch.long), max_new_tokens=len(tgt), do_sample=False,
                             pad_token_id=tok.pad_token_id)[0, len(ctx):].tolist()
        reproduced = out == tgt
        assert s.exact == reproduced
        lead = next((k for k, (a, b) in enumerate(zip(out, tgt)) if a != b), min(len(out),
                                                                               len(tgt)))
        assert s.leading_match == lead
        n_exact += reproduced
    assert n_train // 2 <= n_exact < len(pairs)  # some memorized, not all


def test_argmax_tie_counts_only_for_the_first_index():
    tok = char_tokenizer()
    model = tiny_llama(len(tok), seed=3)
    a, b = 10, 20
    with torch.no_grad():
        model.lm_head.weight[:] = 0  # every logit ties at 0: argmax is token 0
    pairs = [([1, 5, 6], [0]), ([1, 5, 6], [a]), ([1, 5, 6], [b])]
    s = score(model, pairs)
    assert [x.exact for x in s] == [True, False, False]
    np.testing.assert_allclose([x.logprob[0] for x in s], -math.log(len(tok)), atol=1e-6)
    np.testing.assert_allclose(s[0].entropy, math.log(len(tok)), atol=1e-5)
    np.testing.assert_allclose(s[0].sigma, 0.0, atol=1e-3)  # uniform: log p is constant
    out = model.generate(torch.tensor([[1, 5, 6]]), max_new_tokens=1, do_sample=False,
                         pad_token_id=0)
    assert out[0, -1].item() == 0  # HF breaks the tie the same way


def test_without_min_k_stats_and_empty_targets():
    model, _, pairs, _ = memorized()
    s = score(model, [pairs[0], (pairs[1][0], [])], min_k_stats=False)
    assert s[0].mu is None and s[0].sigma is None
    ref = score(model, [pairs[0]])[0]
    assert _max_err(s[0].logprob, ref.logprob) < 1e-6
    assert len(s[1]) == 0 and math.isnan(s[1].nll_mean) and s[1].exact


def test_output_head_fallback_path_agrees(monkeypatch):
    sm = importlib.import_module("finemem.engine.score")  # the module, not the function

    model, _, pairs, _ = memorized()
    fast = score(model, pairs[:6])
    monkeypatch.setattr(sm, "split_head", lambda m: None)  # models whose head is not a Linear
    slow = score(model, pairs[:6], max_tokens_per_batch=100)
    for a, b in zip(fast, slow):
        assert _max_err(a.logprob, b.logprob) < 1e-5 and np.array_equal(a.correct, b.correct)
        assert _max_err(a.sigma, b.sigma) < 1e-5


def test_bad_input_is_a_user_error():
    model, _, _, _ = memorized()
    with pytest.raises(UserError, match="empty context"):
        score(model, [([], [4, 5])])
    with pytest.raises(UserError, match="context_ids, target_ids"):
        score(model, [[1, 2, 3]])


def test_derived_scores_by_hand():
    lp = np.log(np.array([0.5, 0.25, 1.0, 0.5], np.float32))
    s = TokenScores(lp, np.array([True, False, True, True]), np.zeros(4, np.float32))
    assert abs(s.nll_sum - (math.log(2) + math.log(4) + math.log(2))) < 1e-6
    assert abs(s.nll_mean - math.log(16) / 4) < 1e-6
    assert abs(s.ppl - 2.0) < 1e-6  # exp(ln 16 / 4)
    assert s.token_acc == 0.75 and not s.exact and s.leading_match == 1
    assert s.extraction_strength == 0.5  # last miss at t=1: y_2, y_3 extracted from y_<2
    t = TokenScores(lp, np.array([False, True, True, False]), np.zeros(4, np.float32))
    assert t.leading_match == 0 and t.extraction_strength == 0.0
    u = TokenScores(lp, np.ones(4, bool), np.zeros(4, np.float32))
    assert u.exact and u.leading_match == 4 and u.extraction_strength == 1.0


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_other_architectures_match_the_reference(arch):
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoConfig, GPTNeoForCausalLM

    tok = char_tokenizer()
    torch.manual_seed(0)
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2,
                                           n_head=2, bos_token_id=1, eos_token_id=2))
    else:  # local attention layers (window 8) too
        model = GPTNeoForCausalLM(GPTNeoConfig(
            vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=2, window_size=8,
            attention_types=[[["global", "local"], 1]], bos_token_id=1, eos_token_id=2))
    pairs = encode_all(tok, texts(6, seed=3))
    got = score(model.eval(), pairs, max_tokens_per_batch=100)
    for s, r in zip(got, reference_scores(model, pairs)):
        assert _max_err(s.logprob, r["logprob"]) < 1e-5 and _max_err(s.sigma, r["sigma"]) < 1e-5
        assert np.array_equal(s.correct, r["correct"])


def test_plan_batches_row_cap_given_order_and_no_budget():
    lengths = [5, 9, 7, 3, 8]
    # the given order is kept; at most 2 rows; no token budget
    assert plan_batches(lengths, None, max_rows=2, order=[3, 0, 2, 4, 1]) == [[3, 0], [2, 4], [1]]
    # both limits: 3 rows of longest 9 = 27 > 20, so 2 rows (18); a lone 9 fits any way
    assert plan_batches(lengths, 20, max_rows=3) == [[1, 4], [2, 0], [3]]
    assert plan_batches([30, 2], 20) == [[0], [1]]  # a row longer than the budget goes alone
