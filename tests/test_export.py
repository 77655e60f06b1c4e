"""Exports: the results tables round-trip through csv, parquet and json; `export-model` writes a
folder that plain transformers loads to the same scores as finemem's engine, for full, LoRA
(merged) and head-only (untied) checkpoints of the tied-embedding `builtin:test` model."""

import json
import math

import pytest
import yaml
from typer.testing import CliRunner

from finemem.cli import app

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from finemem.config import load_config
    from finemem.train import train

    root = tmp_path_factory.mktemp("export")
    out = {}
    for method in ("full", "lora", "head"):
        cfg = {"run_dir": str(root / method), "model": "builtin:test",
               "data": {"train": {"source": "builtin:arith", "n": 8},
                        "eval": {"test": {"source": "builtin:arith", "split": "test", "n": 4}}},
               "training": {"method": method, "max_steps": 2, "lr": 5e-3, "batch_size": 4,
                            "save_every": 2, "lora": {"r": 4}}}
        (root / f"{method}.yaml").write_text(yaml.safe_dump(cfg))
        train(load_config(root / f"{method}.yaml"), progress=False)
        out[method] = root / method
    return out


def _pairs():
    from finemem.config import DataSource
    from finemem.data.format import encode
    from finemem.data.loaders import load_examples
    from finemem.models.load import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model("builtin:test"))
    exs = load_examples(DataSource(source="builtin:arith", split="test", n=3))
    return [(p.context, p.target) for p in (encode(tok, e) for e in exs)]


@pytest.mark.parametrize("method", ["full", "lora", "head"])
def test_export_model_scores_like_the_engine(runs, method, tmp_path):
    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finemem import engine

    run = runs[method]
    ref = engine.load_run_checkpoints(run)[-1]
    assert ref.kind == method
    r = runner.invoke(app, ["export-model", ref.path, str(tmp_path / "ship")])
    assert r.exit_code == 0, r.output
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "ship").eval()
    AutoTokenizer.from_pretrained(tmp_path / "ship")
    pairs = _pairs()
    ours = next(m for _, m in engine.iter_models(run, refs=[ref], device="cpu"))
    want = [s.logprob for s in engine.score(ours, pairs)]
    got = [s.logprob for s in engine.score(plain, pairs)]
    for a, b in zip(want, got):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    if method == "head":  # the head is untied: the input embeddings stay the base's
        base = AutoModelForCausalLM.from_pretrained(engine.load_run_checkpoints(run)[0]
                                                    .base_model)
        assert not plain.config.tie_word_embeddings
        assert (plain.get_input_embeddings().weight == base.get_input_embeddings().weight).all()
        assert not (plain.get_output_embeddings().weight
                    == base.get_output_embeddings().weight).all()
    meta = json.loads((tmp_path / "ship" / "finemem_source.json").read_text())
    assert meta["kind"] == method and meta["content_hash"] == ref.content_hash


def test_export_model_refuses_to_overwrite(runs, tmp_path):
    from finemem import engine

    (tmp_path / "ship").mkdir()
    (tmp_path / "ship" / "keep.txt").write_text("x")
    ref = engine.load_run_checkpoints(runs["full"])[-1]
    r = runner.invoke(app, ["export-model", ref.path, str(tmp_path / "ship")])
    assert r.exit_code != 0 and (tmp_path / "ship" / "keep.txt").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["ship"]        # no temporary folder left


@pytest.fixture(scope="module")
def stored(runs):
    """The full run's store with metrics and per-example values, as probes write them."""
    from finemem import engine
    from finemem.store import Store

    run = runs["full"]
    ref = engine.load_run_checkpoints(run)[-1]
    with Store(run / "results.sqlite") as store:
        store.put_metric(ref.name, "test", "answer_accuracy", 0.5, n=4, lo=0.15, hi=0.85)
        store.put_metric(ref.name, "test", "distinct_fraction", 0.75, n=2,
                         setting='{"first_line": false, "k": 2}')
        store.put_metric("step-000000", "test", "perplexity", 76.5, n=4)
        store.put_metric(ref.name, "*", "done:overmem", 1.0, setting="x")
        store.put_examples([(ref.content_hash, f"ex-{i}", "train/mean_nll", "value",
                             json.dumps(1.5 + i)) for i in range(3)])
        store.put_examples([("gone", "ex-0", 'test/mean_nll|{"k": 1}', "value", "2.0")])
        store.put_examples([(ref.content_hash, "ex-0", "members/generation", "value",
                             json.dumps('a "quoted",\nmulti-line <b>text</b>'))])
    return run


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_results_round_trip(stored, fmt):
    from finemem.export import collect, read_export

    r = runner.invoke(app, ["export", str(stored), "--format", fmt, "--out", f"exp-{fmt}",
                            "--json"])
    assert r.exit_code == 0, r.output
    files = json.loads(r.output)["files"]
    assert all(f.startswith(str(stored.resolve())) or f.startswith(str(stored)) for f in files)
    back = read_export(stored / f"exp-{fmt}", fmt)
    want = collect(stored)
    assert back["metrics"] == want["metrics"] and back["examples"] == want["examples"]
    names = {(m["checkpoint"], m["name"]) for m in back["metrics"]}
    assert ("step-000002", "answer_accuracy") in names and not any(
        n.startswith("done:") for _, n in names)
    gone = [e for e in back["examples"] if e["content_hash"] == "gone"]
    assert gone == [{"checkpoint": None, "step": None, "content_hash": "gone", "split": "test",
                     "name": "mean_nll", "settings": '{"k": 1}', "example_id": "ex-0",
                     "value": 2.0, "text": None}]
    gen = [e for e in back["examples"] if e["name"] == "generation"]
    assert gen[0]["text"] == 'a "quoted",\nmulti-line <b>text</b>' and gen[0]["value"] is None
    acc = next(m for m in back["metrics"] if m["name"] == "answer_accuracy")
    assert acc["n"] == 4 and math.isclose(acc["hi"], 0.85) and acc["epoch"] == 1.0
    if fmt == "json":
        doc = json.loads((stored / "exp-json" / "finemem_export.json").read_text())
        assert doc["schema"] == "finemem.export" and doc["version"] == 1


def test_export_paths_stay_inside_the_run(stored, tmp_path):
    from finemem.errors import UserError

    r = runner.invoke(app, ["export", str(stored), "--out", "../outside"])
    assert isinstance(r.exception, UserError) and "leaves the run folder" in str(r.exception)
    assert not (stored.parent / "outside").exists()
    r = runner.invoke(app, ["export", str(stored), "--out", str(tmp_path)])
    assert isinstance(r.exception, UserError)
    r = runner.invoke(app, ["export", str(stored), "--format", "xlsx"])
    assert isinstance(r.exception, UserError) and "csv, parquet, json" in str(r.exception)
