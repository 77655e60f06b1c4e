"""finemem.run and finemem.store: the run folder's one owner. A store written before the base
hash was stored (no `meta` table) reads as before and is not changed by reading; the base's
hash is stored once and found without the model; records are named."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest
import torch
from safetensors.torch import save_file

from finemem.run import BASE, RunFolder, read_config
from finemem.store import MetricRow, Store, value_key


def _folder(tmp_path):
    """A run folder as finemem writes it: config, a base model folder, one checkpoint whose
    record names the base, a store with the checkpoint, a metric and per-example values."""
    base = tmp_path / "base"
    base.mkdir()
    save_file({"w": torch.arange(6, dtype=torch.float32)}, str(base / "model.safetensors"))
    run = tmp_path / "run"
    ck = run / "checkpoints" / "step-000002"
    ck.mkdir(parents=True)
    save_file({"w": torch.ones(6)}, str(ck / "model.safetensors"))
    (ck / "finemem_ckpt.json").write_text(json.dumps(
        {"step": 2, "epoch": 1.0, "kind": "full", "base_model": str(base),
         "content_hash": "ck-hash"}))
    (run / "config.yaml").write_text(f"run_dir: {run}\nmodel: {base}\n"
                                     "data:\n  train: {source: builtin:arith, n: 4}\n")
    want = hashlib.sha256((base / "model.safetensors").read_bytes()).hexdigest()
    with Store(run / "results.sqlite") as s:
        s.add_checkpoint("step-000002", step=2, epoch=1.0, path=str(ck), kind="full",
                         content_hash="ck-hash")
        s.put_metric(BASE, "test", "perplexity", 9.0, n=4, lo=8.0, hi=10.0,
                     setting='{"k": 1}')
        s.put_values(want, "train", "mean_nll", ["a", "b"], [1.5, 2.5])
        s.put_examples([(want, "a", "prompt|gen:x", "gen", json.dumps(
            {"crc": 1, "gens": [[[1, 2], "hello", "eos", 0.5, None]]}))])
    return run, base, want


def test_a_store_from_before_the_base_hash_reads_as_before_and_is_not_changed(tmp_path):
    run, base, want = _folder(tmp_path)
    folder = RunFolder(run)
    db = sqlite3.connect(folder.results_file)
    assert not db.execute("SELECT name FROM sqlite_master WHERE name='meta'").fetchall()
    db.close()
    before = folder.results_file.read_bytes()
    with folder.open_store() as s:
        rows = folder.checkpoints(s)
        assert [(c.name, c.kind, c.content_hash) for c in rows] == [
            (BASE, "base", want), ("step-000002", "full", "ck-hash")]
        assert s.get_values(want, "train", "mean_nll") == {"a": 1.5, "b": 2.5}
        assert [g[0].text for g in s.generations(want)["a"]] == ["hello"]
    assert folder.results_file.read_bytes() == before  # reading wrote nothing


def test_the_base_hash_is_stored_once_and_found_without_the_model(tmp_path):
    run, base, want = _folder(tmp_path)
    folder = RunFolder(run)
    with folder.open_store() as s:
        assert folder.record_base_hash(s, str(base)) == want
        assert folder.base_hash(s) == want
    base.rename(tmp_path / "gone")  # the base folder moved: readers still find its hash
    with folder.open_store() as s:
        assert folder.hashes(s)[BASE] == want


def test_records_are_named_and_read_as_mappings(tmp_path):
    run, _, _ = _folder(tmp_path)
    with RunFolder(run).open_store() as s:
        r = s.metrics(split="test")[0]
    assert isinstance(r, MetricRow) and r.value == 9.0 and r["lo"] == 8.0
    assert r.settings == {"k": 1} and r.key == "test/perplexity" and dict(r)["n"] == 4
    assert value_key("train", "mean_nll", {"k": 1}) == 'train/mean_nll|{"k": 1}'


def test_a_malformed_generation_row_is_an_error_not_skipped(tmp_path):
    run, _, want = _folder(tmp_path)
    with RunFolder(run).open_store() as s:
        s.put_examples([(want, "b", "prompt|gen:y", "gen", json.dumps({"text": "old"}))])
        with pytest.raises(ValueError, match="not a finemem generation row"):
            s.generations(want)


def test_the_config_is_parsed_once_per_file_version(tmp_path, monkeypatch):
    import finemem.config as config

    run, _, _ = _folder(tmp_path)
    calls = []
    real = config.load_config
    monkeypatch.setattr(config, "load_config", lambda p, *a, **k: calls.append(p) or real(p))
    a = read_config(RunFolder(run).config_file)
    assert read_config(run / "config.yaml") is a and RunFolder(run).config is a
    assert len(calls) == 1
