"""The teacher-forced scoring pass: one forward per (context, target) pair feeds every score.

Usage:
    enc = encode(tokenizer, example, loss_on="completion")
    [s] = score(model, [(enc.context, enc.target)])
    s.logprob, s.correct, s.nll_mean, s.exact, s.extraction_strength

How it runs:
  * the model reads context + target[:-1] (the last target token predicts nothing scored);
    pairs are sorted by that length (longest first) and packed into batches of at most
    ``max_tokens_per_batch`` padded tokens (rows x longest row; at most 2048 on CPU, where
    smaller batches run faster); a pair longer than the budget gets a batch of its own;
    a batch that runs out of GPU memory halves the budget for it and the rest of the call
    (re-planned) instead of crashing;
  * rows are right-padded and position ids are ``0..L-1``. Under a causal mask a real token
    never sees a pad that follows it, so the pads change nothing and no padding mask is needed
    (the invariance tests check this);
  * the model body runs once; the output head is applied only to the hidden states that
    predict target tokens, in chunks of at most ``_CHUNK_ELEMS`` logits, and each chunk is
    reduced in place (max -> log-sum-exp -> gathered log p, entropy, moments) before the
    next one, so full-vocabulary logits never outlive one chunk;
  * results come back in input order as float32 / bool numpy arrays.

Argmax ties: ``max(-1)`` returns the first maximal index, as ``torch.argmax`` in Hugging Face
greedy decoding does, so on a tie a token counts as correct only if it is the lowest-index maximum. With that
rule ``all(correct)`` is exactly "greedy decoding from the context reproduces the target".
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import numpy as np
import torch

from finemem.errors import UserError
from finemem.metrics import likelihood as lk

_CHUNK_ELEMS = 1 << 23  # logits per reduction chunk (32 MiB in float32)
# On CPU, batches past a few thousand tokens spill the caches: builtin:tiny scores 256 x 64
# tokens in 0.20 s at 2048 tokens per batch and 0.43 s at 16384 (2 cores).
_CPU_TOKENS = 2048
# Heads of at least this many words (real pretrained LMs: SmolLM2 49,152) make a pass costly
# enough for the training split (finemem.train.forward) and shared audit passes
# (finemem.engine.share); the built-in models (a few thousand words) keep their exact paths.
LARGE_HEAD = 16384
_LOGP_FLOOR = -1e4  # log p below this has p == 0 in float32; keeps 0 * log 0 finite


@dataclass
class TokenScores:
    """Per-target-token results of one teacher-forced pass (arrays of shape (T,)).

    Attributes
    ----------
    logprob : float32, log p(y_t | context, y_<t) (natural log).
    correct : bool, argmax_z p(z | ...) == y_t (first maximal index wins a tie).
    entropy : float32, H_t = -sum_z p(z) log p(z) of the predictive distribution (nats).
    mu, sigma : float32 or None, mean and standard deviation of log p(z) for z ~ p, i.e.
        mu_t = sum_z p(z) log p(z) (= -H_t) and sigma_t^2 = sum_z p(z) (log p(z) - mu_t)^2,
        the normalisers of Min-K%++ (Zhang et al. 2024). None when min_k_stats=False.

    The arrays of one `score` call are views into shared flat arrays (copy one to keep it
    alone).
    """

    logprob: np.ndarray
    correct: np.ndarray
    entropy: np.ndarray
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.logprob.size)

    def _per_example(self, metric, flags: bool = False) -> float:
        """One example's value of a `finemem.metrics.likelihood` function; nan when empty."""
        if not len(self):
            return math.nan
        return float(metric([self.correct if flags else self.logprob], per_example=True)[0])

    @property
    def nll_sum(self) -> float:
        """-sum_t log p(y_t) (`metrics.sum_nll`)."""
        return self._per_example(lk.sum_nll)

    @property
    def nll_mean(self) -> float:
        """-(1/T) sum_t log p(y_t) (`metrics.mean_nll`); nan for an empty target."""
        return self._per_example(lk.mean_nll)

    @property
    def ppl(self) -> float:
        """exp(nll_mean) (`metrics.perplexity`)."""
        return self._per_example(lk.perplexity)

    @property
    def token_acc(self) -> float:
        """Share of target tokens whose argmax is right (`metrics.token_accuracy`)."""
        return self._per_example(lk.token_accuracy, flags=True)

    @property
    def exact(self) -> bool:
        """Every argmax right: greedy decoding reproduces the whole target
        (`metrics.exact_greedy_extractable`); True for an empty target."""
        return not len(self) or bool(self._per_example(lk.exact_greedy_extractable, flags=True))

    @property
    def leading_match(self) -> int:
        """Target tokens greedy decoding reproduces before its first miss
        (`metrics.leading_match_length`)."""
        return 0 if not len(self) else int(self._per_example(lk.leading_match_length, flags=True))

    @property
    def extraction_strength(self) -> float:
        """The share of the target greedy decoding completes from the shortest true target
        prefix (`metrics.extraction_strength`)."""
        return self._per_example(lk.extraction_strength, flags=True)


def plan_batches(lengths: list[int], max_tokens: int | None, *, max_rows: int | None = None,
                 order: list[int] | None = None) -> list[list[int]]:
    """Indices in batches of consecutive `order` (default: longest first) such that
    len(batch) * longest <= max_tokens (the first row's length is the batch's longest) and
    len(batch) <= max_rows; a row longer than the budget goes alone. None: no such limit."""
    if order is None:
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = lengths[cur[0]] if cur else lengths[i]
        if cur and ((max_rows and len(cur) >= max_rows) or
                    (max_tokens and (len(cur) + 1) * longest > max_tokens)):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def batch_budget(model, max_tokens_per_batch: int) -> int:
    """Padded tokens per batch that `score` uses: the budget, capped at 2048 on CPU."""
    if _device(model).type == "cpu":
        return min(max_tokens_per_batch, _CPU_TOKENS)
    return max_tokens_per_batch


def split_head(model):
    """(body, head) when the head can be applied to chosen hidden states, else None."""
    cfg = getattr(model, "config", None)
    if cfg is not None and (getattr(cfg, "final_logit_softcapping", None)
                            or getattr(cfg, "logit_scale", None)):
        return None  # the head is more than a Linear; use the model's own forward
    try:
        body, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if body is None or not isinstance(head, torch.nn.Linear):
        return None
    return body, head


def large_model(model) -> bool:
    """Whether `model`'s output head has at least `LARGE_HEAD` words (a real pretrained LM),
    where a pass costs seconds on a CPU. The engine takes its faster paths there (shared
    passes, `finemem.engine.share`; LoRA adapters merged for inference,
    `finemem.engine.checkpoints`), equal to the exact ones up to float rounding; the built-in
    models keep the exact paths, so figures published from them reproduce bit for bit."""
    parts = split_head(model) if model is not None else None
    return parts is not None and parts[1].out_features >= LARGE_HEAD


def forward_params(model) -> set[str]:
    """Argument names of the (unwrapped) model's forward."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(inspect.signature(base.forward).parameters)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _reduce(logits: torch.Tensor, tgt: torch.Tensor, min_k_stats: bool) -> list[torch.Tensor]:
    """Per-row stats of a (n, V) logit chunk, in place (consumes `logits`).

    With z = logit - max and e = exp(z), s = sum e:  log p = z - log s,
    E_p[log p] = (e . z) / s - log s  and  Var_p[log p] = (e . (z - c)^2) / s, c = E_p[z].
    `logits` and `e` are the (n, V) buffers, plus one transient inside each dot product.
    """
    logits = logits.float()
    m, idx = logits.max(-1)  # first maximal index on ties, as torch.argmax  # (n,)
    correct = idx == tgt
    z = logits.sub_(m[:, None])  # (n, V), <= 0
    z_t = z.gather(-1, tgt[:, None]).squeeze(-1)  # (n,)
    z.clamp_(min=_LOGP_FLOOR)  # a -inf logit has p = 0; keeps 0 * z finite
    e = z.exp()  # (n, V) unnormalised p
    s = e.sum(-1)
    log_s = s.log()
    dot = torch.linalg.vecdot  # row-wise a . b (4x faster than bmm on CPU)
    ez = dot(e, z) / s  # E_p[z]
    mu = ez - log_s  # E_p[log p] = -entropy
    out = [z_t - log_s, correct, -mu]
    if min_k_stats:  # two-pass variance: no cancellation for near-uniform rows
        d = z.sub_(ez[:, None])  # log p - mu
        out += [mu, (dot(e.mul_(d), d) / s).clamp_(min=0).sqrt_()]
    return out


def _score_batch(model, parts, rows, min_k_stats: bool, pad_id: int) -> list[np.ndarray]:
    """Flat per-token stats of one batch, rows' target tokens one after another."""
    dev = _device(model)
    # the last target token is never an input: its successor is not scored
    seqs = [ctx + target[:-1] for ctx, target in rows]
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    b_idx, p_idx, tgt = [], [], []
    for b, (ctx, target) in enumerate(rows):
        ids[b, :len(seqs[b])] = torch.tensor(seqs[b], dtype=torch.long)
        b_idx += [b] * len(target)
        p_idx += range(len(ctx) - 1, len(ctx) + len(target) - 1)  # state predicting token
        tgt += target
    ids = ids.to(dev)
    pos = torch.arange(L, device=dev).expand(len(seqs), L)
    b_idx = torch.tensor(b_idx, device=dev)
    p_idx = torch.tensor(p_idx, device=dev)
    tgt = torch.tensor(tgt, dtype=torch.long, device=dev)
    if parts is not None:
        body, head = parts
        hidden = body(input_ids=ids, position_ids=pos, use_cache=False)[0]  # (B, L, H)
        hidden = hidden[b_idx, p_idx]  # (N, H)
        del_after = True
    else:
        first = int(p_idx.min()) if "logits_to_keep" in forward_params(model) else 0
        keep = {"logits_to_keep": torch.arange(first, L, device=dev)} if first else {}
        logits_all = model(input_ids=ids, position_ids=pos, use_cache=False, **keep).logits
        hidden, del_after = logits_all[b_idx, p_idx - first], False  # (N, V) already logits
    n_tok = hidden.shape[0]
    vocab = parts[1].out_features if parts is not None else hidden.shape[-1]
    step = max(1, _CHUNK_ELEMS // vocab)
    stats: list[list[torch.Tensor]] = []
    for s in range(0, n_tok, step):
        chunk = hidden[s:s + step]
        logits = parts[1](chunk) if del_after else chunk
        stats.append(_reduce(logits, tgt[s:s + step], min_k_stats))
    return [torch.cat(c).cpu().numpy() for c in zip(*stats)]  # per stat: (N,) over the batch


def _check(pairs) -> list[int]:
    lengths = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise UserError(f"score: pair {i} is not a (context_ids, target_ids) tuple; build "
                            "pairs as (enc.context, enc.target) from finemem.data.format.encode")
        ctx, tgt = pair
        if len(tgt) and not len(ctx):
            raise UserError(f"score: pair {i} has an empty context, so its first target token "
                            "has no prediction; encode with a tokenizer that has a bos token "
                            "or move the first target token into the context")
        lengths.append(max(len(ctx) + len(tgt) - 1, 1))  # tokens the model reads
    return lengths


@torch.inference_mode()
def score(model, pairs: list[tuple[list[int], list[int]]], *, max_tokens_per_batch: int = 16384,
          min_k_stats: bool = True, progress: bool = False) -> list[TokenScores]:
    """Teacher-forced scores of every target token of every pair, in input order.

    Parameters
    ----------
    model : a causal LM (Hugging Face or peft-wrapped), on its device.
    pairs : list of (context_ids, target_ids); target_ids are the scored tokens.
    max_tokens_per_batch : padded tokens (rows x longest row) per forward pass; on CPU at
        most 2048, which runs faster there (see `batch_budget`).
    min_k_stats : also compute ``mu`` and ``sigma`` (one more pass over each logit chunk).
    progress : show a progress bar over batches.

    Returns
    -------
    list of TokenScores, one per pair, arrays of shape (len(target_ids),).
    """
    lengths = _check(pairs)
    if max_tokens_per_batch < 1:
        raise UserError("score: max_tokens_per_batch must be >= 1")
    todo = [i for i, (_, tgt) in enumerate(pairs) if len(tgt)]
    budget = batch_budget(model, max_tokens_per_batch)
    batches = [[todo[j] for j in b] for b in plan_batches([lengths[i] for i in todo], budget)]
    # One flat array per stat for all results, each TokenScores holding views into it: no
    # per-example allocations between the batches' big buffers, so the heap does not fragment
    # and peak memory does not grow with the number of pairs (bench/engine.py (d)).
    total = sum(len(pairs[i][1]) for i in todo)
    flat = [np.empty(total, np.float32), np.empty(total, bool), np.empty(total, np.float32)]
    if min_k_stats:
        flat += [np.empty(total, np.float32), np.empty(total, np.float32)]
    spans: dict[int, tuple[int, int]] = {}
    parts = split_head(model)
    was_training = model.training
    model.eval()
    pos = 0
    try:
        for batch in _progress(_backoff_batches(batches, lengths, budget), progress, "scoring"):
            rows = [(list(pairs[i][0]), list(pairs[i][1])) for i in batch]
            try:
                cols = _score_batch(model, parts, rows, min_k_stats, pad_id=0)
            except Exception as e:  # out of memory: halve the budget, re-plan, retry
                if not is_oom(e):
                    raise
                batch.oom = True  # _backoff_batches re-plans from this batch
                continue
            n = cols[0].shape[0]
            for dst, col in zip(flat, cols):
                dst[pos:pos + n] = col
            for i, (_, tgt) in zip(batch, rows):
                spans[i] = (pos, pos + len(tgt))
                pos += len(tgt)
    finally:
        model.train(was_training)
    out = []
    for i in range(len(pairs)):
        a, b = spans.get(i, (0, 0))
        views = [f[a:b] for f in flat]
        out.append(TokenScores(*views) if min_k_stats else TokenScores(*views, None, None))
    return out


def is_oom(e: BaseException) -> bool:
    """An out-of-memory error of CUDA (torch.OutOfMemoryError) or MPS."""
    oom = getattr(torch, "OutOfMemoryError", None)
    return (oom is not None and isinstance(e, oom)) or \
        (isinstance(e, RuntimeError) and "out of memory" in str(e).lower())


class _Batch(list):
    """A planned batch; `oom` is set when it ran out of memory."""
    oom = False


def oom_backoff(batches: list[list[int]], replan, too_big, reset=None):
    """Yield the planned batches; after one runs out of memory (the caller sets `.oom`), free
    the cached memory and go on with `replan(rest, failed_size)`: new batches of the failed
    batch's indices and those after it. `reset(batch)` undoes a failed batch's partial work;
    a single index that does not fit raises `too_big(index)` (a `UserError`)."""
    queue = [_Batch(b) for b in batches]
    while queue:
        batch = queue.pop(0)
        yield batch
        if not batch.oom:
            continue
        if len(batch) == 1:
            raise too_big(batch[0])
        if reset is not None:
            reset(batch)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        rest = list(batch) + [i for b in queue for i in b]
        queue = [_Batch(b) for b in replan(rest, len(batch))]


def _backoff_batches(batches: list[list[int]], lengths: list[int], budget: int):
    """`oom_backoff` for scoring: each failure halves the token budget and re-plans."""
    state = {"budget": budget}

    def replan(rest, _):
        state["budget"] = max(1, state["budget"] // 2)
        return [[rest[j] for j in b]
                for b in plan_batches([lengths[i] for i in rest], state["budget"])]

    return oom_backoff(batches, replan, lambda i: UserError(
        f"out of memory scoring one example of {lengths[i]} tokens; use a smaller model or "
        "dtype, or clip data.max_length"))


def _progress(items, on: bool, desc: str):
    if not on:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with transformers
        return items
    return tqdm(items, desc=desc)
