"""Batched, KV-cached generation: greedy and sampled, with per-example seeds.

Usage:
    prompts = [encode_prompt(tok, ex.prompt) for ex in examples]
    gens = generate(model, tok, prompts, max_new_tokens=64)                 # greedy
    gens = generate(model, tok, prompts, max_new_tokens=64, do_sample=True,
                    temperature=0.8, top_p=0.95, n=4, seeds=[...])         # 4 samples each
    gens[i][j].text, gens[i][j].token_ids, gens[i][j].finish_reason

Rows (prompt x sample) are sorted by prompt length, left-padded and run in batches of
``batch_size``; position ids count real tokens only, so a row's logits do not depend on its
padding. Finished rows are dropped from the batch and its KV cache as they finish.

Greedy decoding takes ``argmax`` of the float32 logits (first maximal index on a tie), as Hugging
Face ``generate`` does, and gives the same tokens as calling it one prompt at a time.

Sampling: logits / temperature, then top-k, then top-p (the Hugging Face order), then one
inverse-CDF draw u ~ U[0, 1) per row and step from that row's own CPU ``torch.Generator``,
seeded from (seeds[i], j) for sample j of prompt i. A sample therefore depends only on its
prompt, its seed and the model, not on which batch or device it ran in.

Stopping: at an eos id of the tokenizer or the model's generation config (kept in token_ids),
when the generated text contains one of ``stop_strings`` (token_ids keep the token that
completed it; ``text`` is cut just before the stop string), or after ``max_new_tokens``.
``first_token_entropy`` is the entropy (nats) of the model's own first-step distribution,
before temperature and filtering.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from finemem.engine.score import (_device, _progress, forward_params, is_oom, oom_backoff,
                                  plan_batches)
from finemem.errors import UserError
from finemem.models.load import pad_id


@dataclass
class Generation:
    token_ids: list[int]  # generated tokens only (an ending eos included)
    text: str  # decoded without special tokens, cut before a stop string
    finish_reason: str  # "eos" | "stop" | "length"
    first_token_entropy: float  # nats, of the untempered first-step distribution
    seed: int | None = None  # the row's derived seed (None for greedy)


def row_seed(seed: int, sample: int) -> int:
    """A 63-bit seed for sample `sample` of a prompt seeded `seed` (SeedSequence mixing)."""
    return int(np.random.SeedSequence([int(seed) & (2**63 - 1), sample])
               .generate_state(1, np.uint64)[0] >> np.uint64(1))


def eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for src in (getattr(getattr(model, "generation_config", None), "eos_token_id", None),
                getattr(tokenizer, "eos_token_id", None)):
        if isinstance(src, int):
            ids.add(src)
        elif src:
            ids.update(int(x) for x in src)
    return ids


def _filter(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """(B, V) float logits -> probabilities after temperature, top-k and top-p."""
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        srt, idx = torch.sort(logits, dim=-1, descending=True)
        p = torch.softmax(srt, -1)
        drop = (p.cumsum(-1) - p) >= top_p  # mass strictly above this token already >= top_p
        drop[:, 0] = False
        logits = logits.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))
    return torch.softmax(logits, -1)


def _sample(probs: torch.Tensor, gens: list[torch.Generator]) -> torch.Tensor:
    """One inverse-CDF draw per row with that row's generator. probs: (B, V)."""
    wide = torch.float32 if probs.device.type == "mps" else torch.float64  # MPS has no float64
    cdf = probs.to(wide).cumsum(-1)  # (B, V)
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in gens])
    val = (u.to(cdf.device, wide) * cdf[:, -1])[:, None]
    idx = torch.searchsorted(cdf, val, right=True).squeeze(-1)  # first index with cdf > val
    over = idx >= probs.shape[-1]
    return torch.where(over, probs.argmax(-1), idx.clamp(max=probs.shape[-1] - 1))


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits, -1).clamp(min=-1e4)
    return -(logp.exp() * logp).sum(-1)


def _cache_kw(model) -> str:
    """The forward argument that takes the KV cache ('cache' in transformers >= 5.2x)."""
    return "cache" if "cache" in forward_params(model) else "past_key_values"


class _Row:
    __slots__ = ("prompt", "seed", "gen", "out", "entropy", "reason")

    def __init__(self, prompt: list[int], seed: int | None):
        self.prompt, self.seed, self.out, self.entropy, self.reason = prompt, seed, [], 0.0, ""
        self.gen = None
        if seed is not None:
            self.gen = torch.Generator().manual_seed(seed)

    def reset(self) -> None:
        """Back to the start (after its batch ran out of memory): the same tokens again."""
        self.out, self.entropy, self.reason = [], 0.0, ""
        if self.seed is not None:
            self.gen = torch.Generator().manual_seed(self.seed)


def _hit_stop(tokenizer, out: list[int], stops: list[str], window: int) -> bool:
    tail = tokenizer.decode(out[-window:], skip_special_tokens=True)
    return any(s in tail for s in stops)


def _run_batch(model, tokenizer, rows: list[_Row], *, max_new_tokens, sampling, eos, stops,
               pad_id) -> None:
    dev = _device(model)
    P = max(len(r.prompt) for r in rows)
    ids = torch.full((len(rows), P), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), P), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, P - len(r.prompt):] = torch.tensor(r.prompt, dtype=torch.long)
        mask[b, P - len(r.prompt):] = 1
    ids, mask = ids.to(dev), mask.to(dev)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    from transformers import DynamicCache

    try:  # per-layer cache types (sliding windows) come from the config where supported
        cache = DynamicCache(config=model.config)
    except TypeError:
        cache = DynamicCache()
    kw = {_cache_kw(model): cache}
    last = {"logits_to_keep": 1} if "logits_to_keep" in forward_params(model) else {}
    live = list(range(len(rows)))  # row index of each batch slot
    window = max((len(s) for s in stops), default=0) + 4
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos,
                   use_cache=True, **last, **kw).logits[:, -1]
    ent = _entropy(logits.float()).tolist()
    for b, r in enumerate(rows):
        r.entropy = ent[b]
    for step in range(max_new_tokens):
        logits = logits.float()  # (B, V)
        if sampling is None:
            nxt = logits.argmax(-1)
        else:
            probs = _filter(logits, *sampling)
            nxt = _sample(probs, [rows[i].gen for i in live])
        keep = []
        for slot, (i, tok) in enumerate(zip(live, nxt.tolist())):
            r = rows[i]
            r.out.append(tok)
            if tok in eos:
                r.reason = "eos"
            elif stops and _hit_stop(tokenizer, r.out, stops, window):
                r.reason = "stop"
            elif step + 1 == max_new_tokens:
                r.reason = "length"
            else:
                keep.append(slot)
        if not keep:
            return
        if len(keep) < len(live):
            sel = torch.tensor(keep, device=dev)
            cache.batch_select_indices(sel)
            mask, pos, nxt = mask[sel], pos[sel], nxt[sel]
            live = [live[s] for s in keep]
        mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
        pos = pos[:, -1:] + 1
        logits = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                       use_cache=True, **kw).logits[:, -1]


def _finish(tokenizer, r: _Row, stops: list[str]) -> Generation:
    text = tokenizer.decode(r.out, skip_special_tokens=True)
    if r.reason == "stop":
        cut = min((text.find(s) for s in stops if s in text), default=len(text))
        text = text[:cut]
    return Generation(list(r.out), text, r.reason, float(r.entropy), r.seed)


@torch.inference_mode()
def generate(model, tokenizer, prompts: list[list[int]], *, max_new_tokens: int,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
             top_k: int = 0, n: int = 1, seeds: list[int] | None = None,
             stop_strings: list[str] | None = None, batch_size: int = 64,
             max_tokens_per_batch: int | None = None,
             progress: bool = False) -> list[list[Generation]]:
    """Generate ``n`` continuations of each prompt; returns ``out[i][j]`` for prompt i, sample j.

    Parameters
    ----------
    prompts : token ids to continue (e.g. ``encode_prompt(tok, text)``), each non-empty.
    max_new_tokens : upper bound on generated tokens per row.
    do_sample, temperature, top_p, top_k : greedy when do_sample is False (then the n
        continuations are one greedy decode, copied).
    n : continuations per prompt.
    seeds : one int per prompt (default: the prompt's index); sample j of prompt i uses
        ``row_seed(seeds[i], j)``. Pass seeds derived from example ids to make samples
        independent of list order too.
    stop_strings : stop when the generated text contains any of them.
    batch_size : rows per forward pass.
    max_tokens_per_batch : also keep rows x (longest prompt + max_new_tokens) within this
        token budget (None: batch_size alone). A batch that runs out of GPU memory is retried
        in halves, and the rest of the call uses the halved size.
    """
    if max_new_tokens < 1 or n < 1 or batch_size < 1:
        raise UserError("generate: max_new_tokens, n and batch_size must all be >= 1")
    if do_sample and (temperature <= 0 or not 0 < top_p <= 1 or top_k < 0):
        raise UserError("generate: sampling needs temperature > 0, 0 < top_p <= 1, top_k >= 0")
    if seeds is not None and len(seeds) != len(prompts):
        raise UserError(f"generate: got {len(seeds)} seeds for {len(prompts)} prompts; pass "
                        "one seed per prompt")
    if any(len(p) == 0 for p in prompts):
        raise UserError("generate: empty prompt; start prompts with the bos token "
                        "(finemem.data.format.encode_prompt does)")
    stops = [s for s in (stop_strings or []) if s]
    seeds = list(range(len(prompts))) if seeds is None else list(seeds)
    per_prompt = n if do_sample else 1
    rows = [[_Row(list(p), row_seed(seeds[i], j) if do_sample else None)
             for j in range(per_prompt)] for i, p in enumerate(prompts)]
    flat = [r for rs in rows for r in rs]
    order = sorted(range(len(flat)), key=lambda k: -len(flat[k].prompt))
    # rows (longest prompt first) in batches of at most batch_size rows and, with a budget,
    # rows x (longest prompt + max_new_tokens) <= budget
    batches = plan_batches([len(r.prompt) + max_new_tokens for r in flat], max_tokens_per_batch,
                           max_rows=batch_size, order=order)
    pad = pad_id(tokenizer)
    sampling = (temperature, top_k, top_p) if do_sample else None
    eos = eos_ids(model, tokenizer)
    was_training = model.training
    model.eval()
    try:
        for batch in _progress(_backoff_rows(batches, flat), progress, "generating"):
            try:
                _run_batch(model, tokenizer, [flat[k] for k in batch],
                           max_new_tokens=max_new_tokens, sampling=sampling, eos=eos,
                           stops=stops, pad_id=pad)
            except Exception as e:
                if not is_oom(e):
                    raise
                batch.oom = True  # _backoff_rows retries it in halves
    finally:
        model.train(was_training)
    out = [[_finish(tokenizer, r, stops) for r in rs] for rs in rows]
    if not do_sample:
        out = [[replace(gs[0], token_ids=list(gs[0].token_ids)) for _ in range(n)] for gs in out]
    return out


def _backoff_rows(batches: list[list[int]], flat: list[_Row]):
    """`oom_backoff` for generation: a failed batch's rows are reset and everything from it
    on goes in batches of half its size."""
    def reset(batch):
        for k in batch:
            flat[k].reset()

    return oom_backoff(
        batches, lambda rest, n: [rest[i:i + max(1, n // 2)]
                                  for i in range(0, len(rest), max(1, n // 2))],
        lambda k: UserError(f"out of memory generating for one prompt of "
                            f"{len(flat[k].prompt)} tokens; use a smaller model or dtype, or "
                            "fewer max_new_tokens"), reset)