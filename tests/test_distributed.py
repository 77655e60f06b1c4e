"""1 process vs 2 CPU processes (gloo, `accelerate launch --multi_gpu`, started by
`finemem train/audit --num-processes 2`): the same global batch gives the same weights, the
same per-example scores (within 1e-4) and the same stage labels; no example is scored twice or
dropped when the counts do not divide; resume works under DDP; the main process alone writes.

Every run is a subprocess with one torch thread (OMP_NUM_THREADS=1): on a 2-core machine two
processes with two threads each run many times slower. About 100-115 s on a busy 2-core machine.
"""

import importlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from finemem import distributed as ddp
from finemem.engine.cache import unpack_scores

pytestmark = pytest.mark.integration

# 17 training examples in micro-batches of 8: 8, 8, 1 (the last leaves process 1 without an
# example); 13 test examples: shares of 7 and 6.
CFG = {
    "model": "builtin:test", "device": "cpu",
    "data": {"train": {"source": "builtin:arith", "split": "train", "n": 17},
             "eval": {"test": {"source": "builtin:arith", "split": "test", "n": 13}}},
    "training": {"method": "full", "epochs": 2, "batch_size": 8, "lr": 2e-3, "save_every": 3,
                 "scheduler": "linear", "warmup_steps": 1},
    "audit": {"train_sample": 9, "diversity_prompts": 3, "k_samples": 2, "max_new_tokens": 6,
              "embedding_dispersion": False},
}


def finemem(*args, env_extra=None, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env_extra or {})}
    r = subprocess.run([sys.executable, "-m", "finemem", *args], env=env, capture_output=True,
                       text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return r


def write_cfg(root: Path, name: str, **training) -> Path:
    cfg = json.loads(json.dumps(CFG))
    cfg["run_dir"] = str(root / name)
    cfg["training"].update(training)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    one, two = write_cfg(root, "one"), write_cfg(root, "two")
    finemem("train", "--config", str(one), "--no-progress")
    finemem("audit", str(root / "one"), "--device", "cpu", "--quiet")
    # two processes; killed after step 4 (checkpoint step 3 is complete), then resumed
    r = finemem("train", "--config", str(two), "--no-progress", "--num-processes", "2",
                env_extra={"FINEMEM_CRASH_AFTER_STEP": "4"}, check=False)
    assert r.returncode != 0 and "FINEMEM_CRASH_AFTER_STEP" in r.stderr
    r = finemem("train", "--config", str(two), "--no-progress", "--num-processes", "2")
    assert r.stdout.count("resumed from step-000003") == 1, r.stdout  # one process prints
    finemem("audit", str(root / "two"), "--device", "cpu", "--quiet", "--num-processes", "2")
    return root / "one", root / "two"


def _db(run: Path):
    return sqlite3.connect(run / "results.sqlite")


def _hashes(run: Path) -> dict[str, str]:
    with _db(run) as db:
        rows = dict(db.execute("SELECT name, content_hash FROM checkpoints").fetchall())
    from finemem.engine import load_run_checkpoints

    return {r.name: r.content_hash for r in load_run_checkpoints(run)} | rows


def test_same_checkpoints_weights_and_losses(runs):
    from safetensors.torch import load_file

    one, two = runs
    assert _hashes(one).keys() == _hashes(two).keys()
    names = sorted(p.name for p in (one / "checkpoints").iterdir())
    assert names == ["step-000003", "step-000006"]
    for name in names:
        a, b = (load_file(str(r / "checkpoints" / name / "model.safetensors")) for r in runs)
        assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4, name
    with _db(one) as d1, _db(two) as d2:
        l1 = d1.execute("SELECT step, loss, lr FROM train_log ORDER BY step").fetchall()
        l2 = d2.execute("SELECT step, loss, lr FROM train_log ORDER BY step").fetchall()
    assert [r[0] for r in l1] == [r[0] for r in l2] == list(range(1, 7))
    assert np.allclose([r[1:] for r in l1], [r[1:] for r in l2], atol=1e-5)
    lay1, lay2 = (json.loads((r / "distributed.json").read_text()) for r in runs)
    assert lay1["num_processes"] == 1 and lay2["num_processes"] == 2
    assert lay2["backend"] == "gloo" and lay2["per_process_batch"] == 4
    for k in ("effective_batch", "total_steps", "steps_per_epoch", "lr", "scheduler"):
        assert lay1[k] == lay2[k], k
    assert [s["step"] for s in lay2["starts"]] == [0, 3]  # the start and the resume


def test_same_per_example_scores_no_duplicates_no_drops(runs):
    one, two = runs
    h1, h2 = _hashes(one), _hashes(two)
    worst, compared = 0.0, 0
    with _db(one) as d1, _db(two) as d2:
        for name in h1:
            q = "SELECT setting, example_id, data FROM example_results WHERE ckpt_hash=? " \
                "AND kind='score'"
            r1 = {(s, i): d for s, i, d in d1.execute(q, (h1[name],))}
            r2 = {(s, i): d for s, i, d in d2.execute(q, (h2[name],))}
            assert r1.keys() == r2.keys(), name  # every example once, none missing
            for key in r1:
                a, b = unpack_scores(r1[key])[0], unpack_scores(r2[key])[0]
                assert len(a) == len(b)
                worst = max(worst, float(np.abs(a.logprob - b.logprob).max(initial=0)))
                compared += 1
            g = "SELECT count(*) FROM example_results WHERE ckpt_hash=? AND kind='gen'"
            assert d1.execute(g, (h1[name],)).fetchone() == d2.execute(g, (h2[name],)).fetchone()
    assert compared >= 3 * (13 + 9) and worst < 1e-4, (compared, worst)
    print(f"max |log p| difference, 1 vs 2 processes: {worst:.2e} over {compared} examples")


def test_same_stage_labels_and_metrics(runs):
    from finemem.audit import summarize

    s1, s2 = summarize(runs[0]), summarize(runs[1])
    assert [lab.label for lab in s1.labels] == [lab.label for lab in s2.labels]
    assert all(lab.label != "ungraded" for lab in s1.labels)
    assert s1.recommendation.name == s2.recommendation.name
    for r1, r2 in zip(s1.rows, s2.rows):
        assert r1.get("test/answer_accuracy") == r2.get("test/answer_accuracy")
        assert r1.get("test/perplexity") == pytest.approx(r2.get("test/perplexity"), rel=1e-4)
    keys = []
    for run in runs:  # the same metrics, each once (the main process alone wrote them)
        with _db(run) as db:
            keys.append(sorted(db.execute("SELECT checkpoint, split, name, setting "
                                          "FROM metrics").fetchall()))
    assert keys[0] == keys[1] and len(keys[0]) > 20


def test_finished_run_is_left_alone_under_the_launcher(runs):
    r = finemem("train", "--config", str(runs[1].parent / "two.yaml"), "--num-processes", "2")
    assert r.stdout.count("run is already complete") == 1, r.stdout


def test_batch_that_does_not_divide_is_refused(runs, tmp_path):
    cfg = write_cfg(tmp_path, "odd", batch_size=7)
    r = finemem("train", "--config", str(cfg), "--num-processes", "2", check=False)
    assert r.returncode != 0 and "does not divide over 2 processes" in r.stderr
    assert not (tmp_path / "odd" / "checkpoints").exists()


# units: no processes -------------------------------------------------------------------
def test_shards_cover_every_item_once():
    items = list(range(13))
    for n in (1, 2, 3, 5, 13, 20):
        shares = []
        for r in range(n):
            os.environ.update(WORLD_SIZE=str(n), RANK=str(r))
            try:
                shares.append(ddp.shard(items))
            finally:
                os.environ.pop("WORLD_SIZE"), os.environ.pop("RANK")
        flat = sorted(i for s in shares for i in s)
        assert flat == items and max(map(len, shares)) - min(map(len, shares)) <= 1


def test_local_share_weights_sum_to_one():
    import torch

    items = [(torch.zeros(k + 2, dtype=torch.long), torch.tensor([-100] * 2 + [1] * k))
             for k in (3, 1, 4, 1, 5)]
    for idx in ([0, 1, 2, 3, 4], [2], [0, 4]):
        shares = [ddp.local_share(idx, items, 2, p) for p in range(2)]
        assert sum(w for _, w in shares) == pytest.approx(1.0)
        got = [i for (ids, w) in shares if w for i in ids]
        assert sorted(got) == sorted(idx)  # each example in one share; an empty one weighs 0
    assert ddp.local_share([0, 1], items, 1, 0) == ([0, 1], 1.0)


def test_audit_refuses_sharded_weights(monkeypatch):
    from finemem.errors import UserError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(UserError, match="does not support FSDP"):
        ddp.check_audit_launch()
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(UserError, match="ZeRO-3"):
        ddp.check_audit_launch()


# the GPU path's out-of-memory back-off, simulated on CPU --------------------------------
def _oom_over(limit, real):
    """`real`, raising torch.OutOfMemoryError for batches of more than `limit` rows."""
    import torch

    def fake(model, first, rows, *a, **kw):
        if len(rows) > limit:
            if hasattr(rows[0], "out"):  # a generation row: leave it half-done, as a real OOM
                rows[0].out.append(3)
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, first, rows, *a, **kw)
    return fake


def test_scoring_halves_the_batch_on_out_of_memory(monkeypatch):
    sc = importlib.import_module("finemem.engine.score")  # the module, not the function
    from test_engine_helpers import memorized

    model, tok, pairs, _ = memorized()
    want = sc.score(model, pairs)
    monkeypatch.setattr(sc, "_score_batch", _oom_over(2, sc._score_batch))
    got = sc.score(model, pairs)
    for a, b in zip(want, got):
        assert np.allclose(a.logprob, b.logprob, atol=1e-5) and (a.correct == b.correct).all()
    monkeypatch.setattr(sc, "_score_batch", _oom_over(0, sc._score_batch))
    from finemem.errors import UserError

    with pytest.raises(UserError, match="out of memory scoring one example"):
        sc.score(model, pairs[:3])


def test_generation_halves_the_batch_on_out_of_memory(monkeypatch):
    gm = importlib.import_module("finemem.engine.generate")
    from test_engine_helpers import memorized

    model, tok, pairs, _ = memorized()
    prompts = [c for c, _ in pairs]
    kw = dict(max_new_tokens=8, do_sample=True, n=2, seeds=list(range(len(prompts))))
    want = gm.generate(model, tok, prompts, batch_size=16, **kw)
    monkeypatch.setattr(gm, "_run_batch", _oom_over(3, gm._run_batch))
    got = gm.generate(model, tok, prompts, batch_size=16, **kw)
    assert [[g.token_ids for g in gs] for gs in got] == [[g.token_ids for g in gs] for gs in want]
    # a token budget alone gives the same tokens
    budget = gm.generate(model, tok, prompts, batch_size=16, max_tokens_per_batch=40, **kw)
    assert [[g.token_ids for g in gs] for gs in budget] == \
        [[g.token_ids for g in gs] for gs in want]
