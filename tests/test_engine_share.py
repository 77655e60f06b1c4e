"""engine.share: requests several cuts of the same texts make are scored in one pass per
distinct sequence, and each pair's row equals what its own call would have computed."""

import importlib

import numpy as np
import pytest

from finemem.engine import ScoreRequest, large_model, score, score_cached, score_shared
from finemem.engine.share import plan_covers
from finemem.store import Store
from test_engine_cache import Counting
from test_engine_helpers import memorized

share_mod = importlib.import_module("finemem.engine.share")
cache_mod = importlib.import_module("finemem.engine.cache")


def test_plan_covers_every_request_is_a_prefix_of_its_cover():
    rng = np.random.default_rng(0)
    roots = [list(rng.integers(0, 5, size=rng.integers(4, 12))) for _ in range(6)]
    seqs = []
    for r in roots:  # each text in several cuts: whole, a prefix, the completion only
        seqs += [(r, 1), (r[:3], 1), (r, len(r) - 2), (r[: len(r) - 1], 2)]
    covers, by = plan_covers(seqs)
    distinct = {tuple(r) for r in roots}
    maximal = {t for t in distinct if not any(len(u) > len(t) and u[:len(t)] == t
                                              for u in distinct)}
    assert len(covers) == len(maximal)
    for (toks, start), c in zip(seqs, by):
        cov_toks, cov_start = seqs[covers[c][0]][0], covers[c][1]
        assert list(cov_toks[:len(toks)]) == list(toks) and cov_start <= start
    # a cover starts where its earliest request does, no earlier
    for j, (i, start) in enumerate(covers):
        assert start == min(s for (_, s), c in zip(seqs, by) if c == j)


def test_plan_covers_unrelated_and_equal_sequences():
    covers, by = plan_covers([([1, 2], 1), ([3, 4], 1), ([1, 2], 1), ([1, 3], 1)])
    assert len(covers) == 3 and by[0] == by[2] and len({by[0], by[1], by[3]}) == 3
    assert plan_covers([]) == ([], [])


def _cuts(pairs):
    """Three probes' cuts of the same texts: whole (loss on all), the target only, and a
    prefix -> short suffix (extraction)."""
    whole = [(c[:1], c[1:] + t) for c, t in pairs]
    completion = [(c, t) for c, t in pairs]
    extract = [(c + t[:2], t[2:5]) for c, t in pairs if len(t) >= 5]
    return whole, completion, extract


def test_rows_equal_their_own_calls_one_pass_per_text(tmp_path, monkeypatch):
    model, _, pairs, _ = memorized()
    pairs = pairs[:12]
    whole, completion, extract = _cuts(pairs)
    ids = [f"ex{i}" for i in range(len(pairs))]
    reqs = [ScoreRequest("score:all", ids, whole), ScoreRequest("score:completion", ids,
                                                                completion),
            ScoreRequest("extract", ids[:len(extract)], extract)]
    counter = Counting(score)
    monkeypatch.setattr(share_mod, "score", counter)
    with Store(tmp_path / "r.sqlite") as store:
        st = score_shared(store, "h", model, reqs)
        assert st == {"requested": 12 + 12 + len(extract), "missing": 12 + 12 + len(extract),
                      "passes": 12}
        assert counter.items == 12  # one pass per text, not one per cut
        cache_counter = Counting(score)
        monkeypatch.setattr(cache_mod, "score", cache_counter)
        for r in reqs:
            got = score_cached(store, "h", r.setting, model, r.ids, r.pairs)
            for g, d in zip(got, score(model, r.pairs)):
                np.testing.assert_allclose(g.logprob, d.logprob, atol=1e-5)
                np.testing.assert_allclose(g.entropy, d.entropy, atol=1e-5)
                np.testing.assert_allclose(g.sigma, d.sigma, atol=1e-5)
                assert np.array_equal(g.correct, d.correct) and len(g) == len(d)
        assert cache_counter.items == 0  # every row came from the shared pass
        # a rerun finds everything stored: no pass
        assert score_shared(store, "h", model, reqs)["passes"] == 0


def test_changed_tokens_are_rescored_and_other_checkpoints_kept_apart(tmp_path):
    model, _, pairs, _ = memorized()
    ids = [f"ex{i}" for i in range(4)]
    with Store(tmp_path / "r.sqlite") as store:
        score_shared(store, "h", model, [ScoreRequest("s", ids, pairs[:4])])
        st = score_shared(store, "h", model, [ScoreRequest("s", ids, pairs[4:8])])
        assert st["missing"] == 4  # same ids, other tokens: the stored rows are stale
        assert score_shared(store, "h2", model, [ScoreRequest("s", ids, pairs[4:8])]
                            )["missing"] == 4


def test_small_heads_are_not_shared():
    model, _, _, _ = memorized()
    assert not large_model(model) and not large_model(None)


@pytest.mark.integration
def test_audit_with_shared_passes_gives_the_same_figures(tmp_path):
    """A builtin run audited both ways (audit.share_passes on / off): every metric equal up to
    float summation order, and fewer examples through the engine."""
    import yaml

    from finemem.audit.loop import audit_run
    from finemem.config import parse_config
    from finemem.run import RunFolder
    from finemem.train import train

    cfg = {"run_dir": str(tmp_path / "run"), "model": "builtin:test", "device": "cpu",
           "data": {"train": {"source": "builtin:qa", "split": "train", "n": 24},
                    "eval": {"test": {"source": "builtin:qa", "split": "test", "n": 24}},
                    "max_length": 96, "loss_on": "all"},
           "training": {"epochs": 1, "lr": 3e-3, "batch_size": 8, "seed": 0},
           "audit": {"likelihood": {"train_sample": 24},
                     "membership": {"members": 24, "nonmembers": 24, "n_boot": 100},
                     "extraction": {"members": 24, "nonmembers": 24, "prefix_tokens": 8,
                                    "suffix_tokens": 16}}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    train(parse_config(cfg), progress=False)
    import shutil

    figures, items = {}, {}
    for on in (False, True):
        run = tmp_path / f"run-{on}"
        shutil.copytree(tmp_path / "run", run, symlinks=True)
        counter = Counting(score)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(cache_mod, "score", counter)
            m.setattr(share_mod, "score", counter)
            from finemem.audit.loop import open_run

            acfg = open_run(run).audit.model_copy(update={"share_passes": on})
            audit_run(run, probes=["likelihood", "membership", "extraction"],
                      audit_cfg=acfg, progress=False, workers=1)
        items[on] = counter.items
        with RunFolder(run).open_store() as s:
            figures[on] = {(r.checkpoint, r.split, r.name, r.setting): r.value
                           for r in s.metrics()}
    assert figures[True].keys() == figures[False].keys()
    for k, v in figures[False].items():
        assert figures[True][k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
    # per checkpoint: 24 train + 24 test texts once, instead of also the non-members' whole
    # texts and both sets' extraction cuts
    assert items[True] < items[False]


def test_generation_requests_with_the_same_settings_run_as_one_call(tmp_path, monkeypatch):
    from finemem.engine import GenerationRequest, generate, generate_cached, generate_shared

    model, tok, pairs, _ = memorized()
    prompts = [c for c, _ in pairs[:10]]
    a = GenerationRequest("g", [f"m{i}" for i in range(5)], prompts[:5], {"max_new_tokens": 6})
    b = GenerationRequest("g", [f"n{i}" for i in range(5)], prompts[5:], {"max_new_tokens": 6})
    other = GenerationRequest("g", ["x"], prompts[:1], {"max_new_tokens": 3})
    counter = Counting(generate)
    monkeypatch.setattr(cache_mod, "generate", counter)
    with Store(tmp_path / "r.sqlite") as store:
        assert generate_shared(store, "h", model, tok, [a, b, other]) == 2  # two settings
        assert counter.calls == 2  # m0-m4 and n0-n4 together, x alone
        for r in (a, b, other):  # the probes' own calls read the rows
            got = generate_cached(store, "h", r.setting, model, tok, r.ids, r.prompts,
                                  **r.options)
            alone = generate(model, tok, r.prompts, **r.options)
            assert [g[0].token_ids for g in got] == [g[0].token_ids for g in alone]
        assert counter.calls == 2
