"""Shared builders for the engine tests: a char tokenizer, a tiny random Llama, and a copy of it
fine-tuned until it memorized half of 32 short texts (built once per test process).

The other tests/test_engine_*.py modules import from here; the checks below make sure the
fixtures are what those tests assume (the model really memorized part of its data).
"""

from __future__ import annotations

import copy
import random
import string
from functools import lru_cache

import numpy as np
import torch

CHARS = string.ascii_lowercase + " .,:"


def char_tokenizer():
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *CHARS])}
    tk = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


def tiny_llama(vocab_size: int, *, seed: int = 0, hidden: int = 48, layers: int = 2,
               tie: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
                      pad_token_id=0, tie_word_embeddings=tie)
    return LlamaForCausalLM(cfg).eval()


def texts(n: int = 32, *, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(string.ascii_lowercase + " ") for _ in range(rng.randint(18, 30)))
            for _ in range(n)]


def encode_all(tok, items: list[str], split: int = 8) -> list[tuple[list[int], list[int]]]:
    from finemem.data.example import Example
    from finemem.data.format import encode

    out = []
    for t in items:
        enc = encode(tok, Example(prompt=t[:split], completion=t[split:]))
        out.append((enc.context, enc.target))
    return out


def finetune(model, seqs: list[list[int]], *, steps: int, lr: float = 1e-2, seed: int = 0):
    """A plain full-sequence LM loop (no finemem.train): right-padded batches of all seqs."""
    torch.manual_seed(seed)
    L = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), L, dtype=torch.long)
    labels = torch.full((len(seqs), L), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        labels[i, :len(s)] = torch.tensor(s)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@lru_cache(maxsize=1)
def memorized():
    """(model, tokenizer, pairs, n_train): trained on pairs[:n_train] only."""
    tok = char_tokenizer()
    pairs = encode_all(tok, texts(32))
    n_train = 16
    model = tiny_llama(len(tok), seed=1)
    finetune(model, [c + t for c, t in pairs[:n_train]], steps=100, lr=1e-2)
    return model, tok, pairs, n_train


def fresh_memorized():
    model, tok, pairs, n_train = memorized()
    return copy.deepcopy(model), tok, pairs, n_train


def reference_scores(model, pairs):
    """One unpadded forward per pair; float64 reductions; the obvious way."""
    out = []
    with torch.no_grad():
        for ctx, tgt in pairs:
            ids = torch.tensor([ctx + tgt])
            logits = model(input_ids=ids).logits[0, len(ctx) - 1:-1].double()  # (T, V)
            logp = torch.log_softmax(logits, -1)
            t = torch.tensor(tgt)
            lp = logp[torch.arange(len(tgt)), t]
            p = logp.exp()
            mu = (p * logp).sum(-1)
            sigma = (p * (logp - mu[:, None]) ** 2).sum(-1).sqrt()
            out.append(dict(logprob=lp.numpy(), correct=(logits.argmax(-1) == t).numpy(),
                            entropy=(-mu).numpy(), mu=mu.numpy(), sigma=sigma.numpy()))
    return out


def test_char_tokenizer_round_trips_text():
    tok = char_tokenizer()
    ids = tok("ab c.", add_special_tokens=False)["input_ids"]
    assert ids == [4, 5, 30, 6, 31]
    assert tok.decode(ids) == "ab c."


def test_memorized_model_memorized_train_half_only():
    model, tok, pairs, n_train = memorized()
    ref = reference_scores(model, pairs)
    exact = np.array([r["correct"].all() for r in ref])
    assert exact[:n_train].mean() >= 0.5  # trained texts are mostly reproduced
    assert not exact[n_train:].any()  # random held-out texts are not
