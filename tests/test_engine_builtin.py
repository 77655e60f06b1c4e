"""The engine on the self-built `builtin:test` model (byte-level BPE, real task text): scores
against the reference loop, extraction flags and greedy text against HF generate, stop strings.
"""

import numpy as np
import pytest
import torch

from finemem.data.format import encode, encode_prompt
from finemem.engine import generate, score
from test_engine_helpers import finetune, reference_scores

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    from finemem.data.tasks import get_task
    from finemem.models.base import build_base
    from finemem.models.load import load_model, load_tokenizer

    mp = pytest.MonkeyPatch()
    mp.setenv("FINEMEM_HOME", str(tmp_path_factory.mktemp("fmhome")))
    path = str(build_base("test", progress=False))
    mp.undo()
    tok, model = load_tokenizer(path), load_model(path, device="cpu")
    examples = get_task("arith").generate("train", n=12, seed=0)
    encs = [encode(tok, ex, loss_on="completion") for ex in examples]
    finetune(model, [e.input_ids for e in encs[:6]], steps=120, lr=1e-2)  # memorize half
    return model, tok, examples, encs


def test_scores_and_flags_on_real_text(tuned):
    model, tok, _, encs = tuned
    pairs = [(e.context, e.target) for e in encs]
    got = score(model, pairs, max_tokens_per_batch=300)
    for s, r in zip(got, reference_scores(model, pairs)):
        assert np.max(np.abs(s.logprob - r["logprob"])) < 1e-5
        assert np.max(np.abs(s.sigma - r["sigma"])) < 1e-5
        assert np.array_equal(s.correct, r["correct"])
    n_exact = 0
    for s, (ctx, tgt) in zip(got, pairs):
        ids = torch.tensor([ctx])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=len(tgt),
                             do_sample=False, pad_token_id=tok.pad_token_id)[0, len(ctx):]
        assert s.exact == (out.tolist() == tgt)
        n_exact += s.exact
    assert 0 < n_exact < len(pairs)


def test_greedy_text_and_stop_strings_on_real_text(tuned):
    model, tok, examples, _ = tuned
    prompts = [encode_prompt(tok, ex.prompt) for ex in examples]
    gens = generate(model, tok, prompts, max_new_tokens=48, batch_size=5)
    for p, (g,) in zip(prompts, gens):
        ids = torch.tensor([p])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=48,
                             do_sample=False, pad_token_id=tok.pad_token_id)[0, len(p):]
        assert g.token_ids == out.tolist()
        assert g.text == tok.decode(g.token_ids, skip_special_tokens=True)
    lines = generate(model, tok, prompts[:6], max_new_tokens=48, stop_strings=["\n"])
    for (g,), ex in zip(lines, examples[:6]):
        if g.finish_reason == "stop":
            assert "\n" not in g.text
    memorized = [g for (g,), ex in zip(lines, examples[:6])
                 if g.text == ex.completion.split("\n")[0]]
    assert memorized and all(g.finish_reason == "stop" for g in memorized)
