"""engine.score_cached / generate_cached: compact rows, reads instead of recomputing, resume after
an interruption, and recomputation when an example's tokens changed."""

import importlib

import numpy as np
import pytest

from finemem.engine import TokenScores, generate, generate_cached, id_seed, score, score_cached
from finemem.engine.cache import pack_scores, unpack_scores
from finemem.errors import UserError
from finemem.store import Store
from test_engine_helpers import memorized

cache_mod = importlib.import_module("finemem.engine.cache")


class Counting:
    """Wraps the engine call the cache makes, counting examples computed; can fail on cue."""

    def __init__(self, fn, fail_after=None):
        self.fn, self.calls, self.items, self.fail_after = fn, 0, 0, fail_after

    def __call__(self, model, items, *args, **kw):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.items += len(items)
        return self.fn(model, items, *args, **kw)


def test_pack_round_trip_with_and_without_stats():
    rng = np.random.default_rng(0)
    for T, stats in ((0, True), (1, False), (9, True), (17, False)):
        s = TokenScores(rng.normal(size=T).astype(np.float32), rng.random(T) < 0.5,
                        rng.random(T).astype(np.float32),
                        *(rng.random((2, T)).astype(np.float32) if stats else (None, None)))
        blob = pack_scores(s, crc=1234)
        assert len(blob) == 13 + 4 * T * (4 if stats else 2) + (T + 7) // 8
        back, crc = unpack_scores(blob)
        assert crc == 1234 and np.array_equal(back.correct, s.correct)
        for name in ("logprob", "entropy", "mu", "sigma"):
            a, b = getattr(back, name), getattr(s, name)
            assert (a is None and b is None) or np.array_equal(a, b)


def test_score_cached_computes_only_what_is_missing(tmp_path, monkeypatch):
    model, _, pairs, _ = memorized()
    ids = [f"ex{i}" for i in range(len(pairs))]
    counter = Counting(score)
    monkeypatch.setattr(cache_mod, "score", counter)
    with Store(tmp_path / "r.sqlite") as store:
        first = score_cached(store, "h1", "ppl", model, ids[:10], pairs[:10])
        assert counter.items == 10
        again = score_cached(store, "h1", "ppl", model, ids, pairs)
        assert counter.items == 10 + 22  # only the 22 new ones
        for a, b in zip(first, again[:10]):
            assert np.array_equal(a.logprob, b.logprob) and np.array_equal(a.sigma, b.sigma)
        direct = score(model, pairs)
        for a, b in zip(again, direct):
            assert np.array_equal(a.logprob, b.logprob) and np.array_equal(a.correct, b.correct)
        # another checkpoint hash or setting is another cache entry
        score_cached(store, "h2", "ppl", model, ids[:3], pairs[:3])
        score_cached(store, "h1", "ppl:all", model, ids[:3], pairs[:3])
        assert counter.items == 32 + 6
        # an id whose tokens changed is recomputed; asking for stats recomputes stat-less rows
        changed = [(pairs[0][0], pairs[0][1][:-1])] + pairs[1:4]
        out = score_cached(store, "h1", "ppl", model, ids[:4], changed)
        assert counter.items == 39 and len(out[0]) == len(pairs[0][1]) - 1
        score_cached(store, "h3", "x", model, ids[:2], pairs[:2], min_k_stats=False)
        score_cached(store, "h3", "x", model, ids[:2], pairs[:2], min_k_stats=False)
        assert counter.items == 41
        s = score_cached(store, "h3", "x", model, ids[:2], pairs[:2])
        assert counter.items == 43 and s[0].mu is not None


def test_interrupted_scoring_resumes(tmp_path, monkeypatch):
    model, _, pairs, _ = memorized()
    ids = [f"ex{i}" for i in range(len(pairs))]
    with Store(tmp_path / "r.sqlite") as store:
        monkeypatch.setattr(cache_mod, "score", Counting(score, fail_after=2))
        with pytest.raises(KeyboardInterrupt):
            score_cached(store, "h", "ppl", model, ids, pairs, chunk=8)
        assert len(store.get_examples("h", "ppl", "score")) == 16  # two chunks were written
        resumed = Counting(score)
        monkeypatch.setattr(cache_mod, "score", resumed)
        out = score_cached(store, "h", "ppl", model, ids, pairs, chunk=8)
        assert resumed.items == 16 and len(out) == 32


def test_generate_cached_resumes_and_keys_on_options(tmp_path, monkeypatch):
    model, tok, pairs, _ = memorized()
    prompts = [c for c, _ in pairs[:12]]
    ids = [f"p{i}" for i in range(12)]
    counter = Counting(lambda model, prompts, tok, **k: generate(model, tok, prompts, **k))
    monkeypatch.setattr(cache_mod, "generate",  # generate(model, tok, prompts, **kw)
                        lambda model, tok, prompts, **k: counter(model, prompts, tok, **k))
    kw = dict(max_new_tokens=8, do_sample=True, n=2, temperature=1.5)
    with Store(tmp_path / "r.sqlite") as store:
        a = generate_cached(store, "h", "s", model, tok, ids[:5], prompts[:5], **kw)
        b = generate_cached(store, "h", "s", model, tok, ids, prompts, **kw)
        assert counter.items == 12
        assert [[g.token_ids for g in r] for r in a] == [[g.token_ids for g in r] for r in b[:5]]
        # default seeds come from the ids, so the samples equal an uncached call with them
        direct = generate(model, tok, prompts, seeds=[id_seed(i) for i in ids], **kw)
        assert [[g.token_ids for g in r] for r in b] == [[g.token_ids for g in r] for r in direct]
        assert b[0][0].seed == direct[0][0].seed and b[0][0].text == direct[0][0].text
        generate_cached(store, "h", "s", model, tok, ids[:3], prompts[:3],
                        **{**kw, "temperature": 0.7})  # another option: computed again
        generate_cached(store, "h", "s", model, tok, ids[:3], prompts[:3],
                        seeds=[1, 2, 3], **kw)  # other seeds: computed again
        assert counter.items == 18
        g = generate_cached(store, "h", "g", model, tok, ids[:2], prompts[:2], max_new_tokens=5)
        g2 = generate_cached(store, "h", "g", model, tok, ids[:2], prompts[:2], max_new_tokens=5,
                             seeds=[7, 8])  # greedy ignores seeds
        assert counter.items == 20
        assert [r[0].token_ids for r in g] == [r[0].token_ids for r in g2]


def test_duplicate_or_mismatched_ids_are_user_errors(tmp_path):
    model, tok, pairs, _ = memorized()
    with Store(tmp_path / "r.sqlite") as store:
        with pytest.raises(UserError, match="appears twice"):
            score_cached(store, "h", "s", model, ["a", "a"], pairs[:2])
        with pytest.raises(UserError, match="example ids"):
            score_cached(store, "h", "s", model, ["a"], pairs[:2])
        with pytest.raises(UserError, match="max_new_tokens"):
            generate_cached(store, "h", "s", model, tok, ["a"], [pairs[0][0]])
