"""Scores and generations cached per example in the run's results store, so audits resume.

Usage:
    scores = score_cached(store, ref.content_hash, "ppl:completion", model, ids, pairs)
    gens = generate_cached(store, ref.content_hash, "greedy:64", model, tok, ids, prompts,
                           max_new_tokens=64)

Rows live in ``Store.example_results`` keyed by (checkpoint content hash, example id, setting,
kind). ``kind`` is "score", "gen" or "attention"; for generations the setting is extended with every
generation option that changes the output. Each row also records a CRC of the example's tokens
(and its seed), so an example id whose tokens changed is recomputed rather than served stale.
Work is done and written in chunks of ``chunk`` examples: an interrupted call loses at most
the chunk in flight and the next call computes only what is missing.

Score rows are compact binary: header ``<4sIBI`` (magic b"FMS1", T, has_stats, crc), then
float32 logprob and entropy, float32 mu and sigma when present, and the packed correct bits:
about 8 (16 with Min-K%++ stats) bytes per token. Generation rows are JSON.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib

import numpy as np

from finemem import distributed as ddp
from finemem import faults
from finemem.engine.attention import attention_stats
from finemem.engine.generate import Generation, generate
from finemem.engine.score import TokenScores, score
from finemem.errors import UserError
from finemem.store import decode_generations, encode_generations

_HDR = struct.Struct("<4sIBI")
_MAGIC = b"FMS1"
_ATT = struct.Struct("<4sIIII")
_ATT_MAGIC = b"FMA1"


def _crc(*seqs) -> int:
    c = 0
    for s in seqs:
        c = zlib.crc32(np.asarray(s, dtype=np.int64).tobytes(), c)
        c = zlib.crc32(b"|", c)
    return c


def pack_scores(s: TokenScores, crc: int) -> bytes:
    has = s.mu is not None and s.sigma is not None
    parts = [_HDR.pack(_MAGIC, len(s), int(has), crc), s.logprob.astype("<f4").tobytes(),
             s.entropy.astype("<f4").tobytes()]
    if has:
        parts += [s.mu.astype("<f4").tobytes(), s.sigma.astype("<f4").tobytes()]
    parts.append(np.packbits(s.correct.astype(bool)).tobytes())
    return b"".join(parts)


def unpack_scores(data: bytes) -> tuple[TokenScores, int]:
    """(scores, crc) from `pack_scores` bytes."""
    magic, T, has, crc = _HDR.unpack_from(data)
    if magic != _MAGIC:
        raise ValueError("not a finemem score row")
    off, arrs = _HDR.size, []
    for _ in range(4 if has else 2):
        arrs.append(np.frombuffer(data, "<f4", T, off).astype(np.float32))
        off += 4 * T
    correct = np.unpackbits(np.frombuffer(data, np.uint8, offset=off), count=T).astype(bool)
    lp, ent, *stats = arrs
    return TokenScores(lp, correct, ent, *(stats or [None, None])), crc


def _check_ids(example_ids, items, what: str) -> list[str]:
    ids = [str(i) for i in example_ids]
    if len(ids) != len(items):
        raise UserError(f"{what}: got {len(ids)} example ids for {len(items)} items")
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"{what}: example id '{dup}' appears twice; ids key the cache, so "
                        "give every example its own id")
    return ids


def _cached(store, ckpt_hash: str, key: str, kind: str, ids: list[str], crcs: list[int], *,
            compute, pack, unpack, chunk: int, point: str,
            usable=lambda value: True) -> list:
    """The per-example cache every engine call goes through: read the rows of `ids`, keep
    those whose CRC matches (and that are `usable`), compute the missing ones in chunks
    (`compute(indices) -> values`; under a launcher each rank computes its share), write each
    chunk in one transaction, and gather the other ranks' rows from the store.
    `pack(value, crc) -> row`, `unpack(row) -> (value, crc)`; `point` is the fault point
    passed after each chunk is computed (finemem.faults)."""
    out: list = [None] * len(ids)
    cached = store.get_examples(ckpt_hash, key, kind, ids)
    for i, eid in enumerate(ids):
        if eid in cached:
            value, crc = unpack(cached[eid])
            if crc == crcs[i] and usable(value):
                out[i] = value
    missing = [i for i, v in enumerate(out) if v is None]
    ddp.barrier()  # launched: every rank has read the cache before any rank writes to it
    mine = ddp.shard(missing)  # launched: this rank's examples; alone: all of them
    for start in range(0, len(mine), chunk):
        part = mine[start:start + chunk]
        new = compute(part)
        faults.point(point)
        store.put_examples((ckpt_hash, ids[i], key, kind, pack(v, crcs[i]))
                           for i, v in zip(part, new))
        for i, v in zip(part, new):
            out[i] = v
    if ddp.active() and missing:  # the gather: the other ranks' rows, from the store
        ddp.barrier()
        for i, row in _gathered(store, ckpt_hash, key, kind, ids, missing, out).items():
            out[i] = unpack(row)[0]
    return out


def score_cached(store, ckpt_hash: str, setting: str, model, example_ids: list,
                 pairs: list[tuple[list[int], list[int]]], *, chunk: int = 1024,
                 **kw) -> list[TokenScores]:
    """`score` with per-example results read from / written to the results store.

    ``setting`` names everything outside the pair that changes the scores (e.g. the
    encoding); ``kw`` goes to `score`. Cached rows without Min-K%++ stats are recomputed when
    ``min_k_stats`` is asked for.
    """
    ids = _check_ids(example_ids, pairs, "score_cached")
    need_stats = kw.get("min_k_stats", True)
    return _cached(store, ckpt_hash, setting, "score", ids, [_crc(c, t) for c, t in pairs],
                   compute=lambda part: score(model, [pairs[i] for i in part], **kw),
                   pack=pack_scores, unpack=unpack_scores, chunk=chunk, point="score",
                   usable=lambda s: s.mu is not None or not need_stats)


def _gathered(store, ckpt_hash: str, setting: str, kind: str, ids: list[str],
              missing: list[int], out: list) -> dict[int, bytes | str]:
    """The stored rows of the examples in `missing` that this rank did not compute (after
    every rank has written its share)."""
    rest = [i for i in missing if out[i] is None]
    rows = store.get_examples(ckpt_hash, setting, kind, [ids[i] for i in rest])
    lost = [ids[i] for i in rest if ids[i] not in rows]
    if lost:
        raise RuntimeError(f"distributed {kind}: {len(lost)} examples were computed by no "
                           f"rank (first: {lost[0]}); was the store changed during the run?")
    return {i: rows[ids[i]] for i in rest}


def id_seed(example_id: str) -> int:
    """A seed from an example id (independent of list order): first 8 bytes of its sha256."""
    return int(hashlib.sha256(str(example_id).encode()).hexdigest()[:15], 16)


def _gen_setting(setting: str, kw: dict) -> str:
    keys = ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "n", "stop_strings")
    defaults = dict(do_sample=False, temperature=1.0, top_p=1.0, top_k=0, n=1,
                    stop_strings=None)
    d = {k: kw.get(k, defaults.get(k)) for k in keys}
    if not d["do_sample"]:
        d.update(temperature=None, top_p=None, top_k=None)
    return setting + "|gen:" + hashlib.sha256(json.dumps(d, sort_keys=True).encode()
                                              ).hexdigest()[:12]


def _unpack_gens(blob) -> tuple[list[Generation], int]:
    crc, gens = decode_generations(blob)
    return [Generation(*g) for g in gens], crc


def generate_cached(store, ckpt_hash: str, setting: str, model, tokenizer, example_ids: list,
                    prompts: list[list[int]], *, seeds: list[int] | None = None,
                    chunk: int = 256, **kw) -> list[list[Generation]]:
    """`generate` with per-example results read from / written to the results store.

    The default seed of an example is `id_seed(example_id)`, so a sample does not depend on
    where the example sits in the list. ``kw`` goes to `generate` (max_new_tokens required).
    """
    if "max_new_tokens" not in kw:
        raise UserError("generate_cached: pass max_new_tokens")
    ids = _check_ids(example_ids, prompts, "generate_cached")
    seeds = [id_seed(i) for i in ids] if seeds is None else [int(s) for s in seeds]
    if len(seeds) != len(ids):
        raise UserError(f"generate_cached: got {len(seeds)} seeds for {len(ids)} prompts")
    sampled = bool(kw.get("do_sample", False))
    crcs = [_crc(p, [s if sampled else 0]) for p, s in zip(prompts, seeds)]
    return _cached(store, ckpt_hash, _gen_setting(setting, kw), "gen", ids, crcs,
                   compute=lambda part: generate(model, tokenizer, [prompts[i] for i in part],
                                                 seeds=[seeds[i] for i in part], **kw),
                   pack=lambda gs, crc: encode_generations(crc, gs), unpack=_unpack_gens,
                   chunk=chunk, point="generate")


def _pack_attention(a: np.ndarray, crc: int) -> bytes:
    return _ATT.pack(_ATT_MAGIC, *a.shape, crc) + a.astype("<f4").tobytes()


def _unpack_attention(data: bytes) -> tuple[np.ndarray, int]:
    magic, layers, heads, stats, crc = _ATT.unpack_from(data)
    if magic != _ATT_MAGIC:
        raise ValueError("not a finemem attention row")
    arr = np.frombuffer(data, "<f4", layers * heads * stats, _ATT.size)
    return arr.reshape(layers, heads, stats).astype(np.float32), crc


def attention_cached(store, ckpt_hash: str, setting: str, model, example_ids: list,
                     pairs: list[tuple[list[int], list[int]]], *, prompt_lens: list[int],
                     chunk: int = 1024) -> list[np.ndarray]:
    """`attention_stats` with per-example results read from / written to the results store
    (binary float32 rows, header ``<4sIIII``: magic b"FMA1", layers, heads, stats, crc)."""
    ids = _check_ids(example_ids, pairs, "attention_cached")
    crcs = [_crc(c, t, [p]) for (c, t), p in zip(pairs, prompt_lens)]
    return _cached(store, ckpt_hash, setting, "attention", ids, crcs,
                   compute=lambda part: attention_stats(model, [pairs[i] for i in part],
                                                        prompt_lens=[prompt_lens[i]
                                                                     for i in part]),
                   pack=_pack_attention, unpack=_unpack_attention, chunk=chunk,
                   point="score")
