"""One forward pass per distinct token sequence: score requests whose tokens begin a longer
request's sequence are read off that sequence's pass. And generation requests with the same
settings in one call, so its batches are full.

Usage:
    reqs = [ScoreRequest("score:all", ids, pairs), ScoreRequest("extract:16:32", ids, cut)]
    score_shared(store, ref.content_hash, model, reqs)   # fills the per-example cache
    generate_shared(store, ref.content_hash, model, tok, [GenerationRequest(...), ...])
    engine.score_cached(store, ref.content_hash, "extract:16:32", model, ids, cut)  # served

Why it is exact: under a causal mask the scores at the first n positions of a sequence do not
depend on the tokens after them, so a pair (context, target) is answered by any scored
sequence that begins with context + target and whose scored part starts at or before
len(context). Probes ask for the same texts in several cuts (a test set's completions for
perplexity, the whole texts for membership, their first P + S tokens for extraction); each
text is then read once per checkpoint instead of once per cut. The values equal separate
calls' up to float summation order (other batch shapes), which is why the audit shares passes
only where a pass is expensive (`engine.score.large_model`).

The rows are written to the results store under each request's own setting, exactly as
`score_cached` writes them, so the probes' own calls, an interrupted audit and a rerun read
them as usual.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from finemem import distributed as ddp
from finemem import faults
from finemem.engine.cache import _check_ids, _crc, generate_cached, pack_scores, unpack_scores
from finemem.engine.score import TokenScores, _device, score

_MOD = (1 << 61) - 1  # prefix hashes: polynomial mod a Mersenne prime, checked token by token
_BASE = 1_000_003


@dataclass
class ScoreRequest:
    """Pairs a probe will score at one checkpoint, under its cache `setting`."""

    setting: str
    ids: list[str]
    pairs: list[tuple[list[int], list[int]]]


@dataclass
class GenerationRequest:
    """Prompts a probe will continue at one checkpoint (`generate_cached` options in
    `options`), under its cache `setting`."""

    setting: str
    ids: list[str]
    prompts: list[list[int]]
    options: dict


# Rows a batch when requests are generated together on a CPU: SmolLM2-135M on 2 cores
# continued 128 prompts by 32 tokens in 11.6 s at 128 rows a batch and 12.8-13.6 s at 64
# (the engine's default), the weights read once per step for twice the rows.
CPU_GENERATION_ROWS = 128


def generate_shared(store, ckpt_hash: str, model, tokenizer,
                    requests: list[GenerationRequest]) -> int:
    """Continue the requests' prompts that the store does not hold yet, those with the same
    setting and options in one `generate_cached` call (the probes' own calls then read the
    rows). Returns the number of calls made."""
    groups: dict[tuple[str, str], tuple[dict, dict]] = {}
    for r in requests:
        key = (r.setting, json.dumps(r.options, sort_keys=True, default=str))
        prompts = groups.setdefault(key, ({}, r.options))[0]
        for eid, p in zip(_check_ids(r.ids, r.prompts, "generate_shared"), r.prompts):
            prompts.setdefault(eid, p)
    if ddp.active():
        return 0
    rows = {"batch_size": CPU_GENERATION_ROWS} if _device(model).type == "cpu" else {}
    for (setting, _), (prompts, options) in groups.items():
        generate_cached(store, ckpt_hash, setting, model, tokenizer, list(prompts),
                        list(prompts.values()), **{**rows, **options})
    return len(groups)


def plan_covers(seqs: list[tuple[list[int], int]]) -> tuple[list[tuple[int, int]], list[int]]:
    """Which sequences to score so that every request is a prefix of one of them.

    Parameters
    ----------
    seqs : per request, (tokens, start): its context + target tokens and the position of its
        first scored token (len(context), >= 1).

    Returns
    -------
    covers : list of (request index whose tokens are scored, first scored position), the
        position being the smallest start among the requests it serves.
    served_by : per request, the index into `covers` it reads from.

    Longest first, each request joins the first cover whose tokens it begins, found through
    a table of every cover's prefix hashes and confirmed token by token.

    >>> covers, by = plan_covers([([1, 2, 3], 2), ([1, 2, 3, 4], 1), ([1, 5], 1)])
    >>> covers, by
    ([(1, 1), (2, 1)], [0, 0, 1])
    """
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i][0]))
    table: dict[tuple[int, int], int] = {}
    covers: list[list[int]] = []  # [request index, start]
    served_by = [0] * len(seqs)
    for i in order:
        toks, start = seqs[i]
        h = 0
        for t in toks:
            h = (h * _BASE + int(t) + 1) % _MOD
        c = table.get((len(toks), h))
        if c is not None and list(seqs[covers[c][0]][0][:len(toks)]) == list(toks):
            covers[c][1] = min(covers[c][1], start)
        else:
            c = len(covers)
            covers.append([i, start])
            h = 0
            for n, t in enumerate(toks, 1):
                h = (h * _BASE + int(t) + 1) % _MOD
                table.setdefault((n, h), c)
        served_by[i] = c
    return [(i, s) for i, s in covers], served_by


def _slice(s: TokenScores, a: int, n: int) -> TokenScores:
    cut = slice(a, a + n)
    return TokenScores(s.logprob[cut], s.correct[cut], s.entropy[cut],
                       None if s.mu is None else s.mu[cut],
                       None if s.sigma is None else s.sigma[cut])


def score_shared(store, ckpt_hash: str, model, requests: list[ScoreRequest], *,
                 chunk: int = 1024) -> dict[str, int]:
    """Score every request's pairs that the store does not hold yet, one pass per distinct
    sequence (`plan_covers`), and write each pair's row under its request's setting, as
    `score_cached` would. Min-K%++ statistics are always computed (every cached row has them).
    Covers are scored `chunk` at a time and their rows written after each chunk, so an
    interrupt loses at most one chunk. Under `accelerate launch` it does nothing: each call
    is then shared between the processes instead.

    Returns {"requested": pairs asked for, "missing": pairs not in the store, "passes":
    sequences scored}.
    """
    items: dict[tuple[str, str], tuple[list[int], list[int], int]] = {}
    for r in requests:
        ids = _check_ids(r.ids, r.pairs, "score_shared")
        for eid, (c, t) in zip(ids, r.pairs):
            items.setdefault((r.setting, eid), (list(c), list(t), _crc(c, t)))
    stats = {"requested": len(items), "missing": 0, "passes": 0}
    if ddp.active() or not items:
        return stats
    todo = []
    for setting in {s for s, _ in items}:
        ids = [e for s, e in items if s == setting]
        have = store.get_examples(ckpt_hash, setting, "score", ids)
        for eid in ids:
            ctx, tgt, crc = items[(setting, eid)]
            if not tgt or not ctx:
                continue  # nothing to score, or the engine's own error message: its call
            if eid in have:
                row, row_crc = unpack_scores(have[eid])
                if row_crc == crc and row.mu is not None:
                    continue
            todo.append((setting, eid))
    stats["missing"] = len(todo)
    if not todo:
        return stats
    seqs = [(items[k][0] + items[k][1], len(items[k][0])) for k in todo]
    covers, served_by = plan_covers(seqs)
    stats["passes"] = len(covers)
    users: list[list[int]] = [[] for _ in covers]
    for j, c in enumerate(served_by):
        users[c].append(j)
    for lo in range(0, len(covers), chunk):
        part = range(lo, min(lo + chunk, len(covers)))
        pairs = []
        for c in part:
            toks, start = seqs[covers[c][0]][0], covers[c][1]
            pairs.append((toks[:start], toks[start:]))
        scored = score(model, pairs, min_k_stats=True)
        faults.point("score")
        rows = []
        for c, s in zip(part, scored):
            for j in users[c]:
                setting, eid = todo[j]
                ctx, tgt, crc = items[(setting, eid)]
                one = _slice(s, len(ctx) - covers[c][1], len(tgt))
                rows.append((ckpt_hash, eid, setting, "score", pack_scores(one, crc)))
        store.put_examples(rows)
    return stats

