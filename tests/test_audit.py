"""End to end: train a `builtin:test` model briefly, audit it, read the summary back,
recommend, merge two checkpoints and audit the merge. Plus the replication verdicts."""

import json
import math
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

from finemem.cli import app

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    cfg = {
        "run_dir": str(root / "run"), "model": "builtin:test",
        "data": {"train": {"source": "builtin:arith", "split": "train", "n": 48},
                 "eval": {"test": {"source": "builtin:arith", "split": "test", "n": 32},
                          "ood": {"source": "builtin:arith", "split": "ood", "n": 16},
                          "test_preamble": {"source": "builtin:arith",
                                            "split": "test_preamble", "n": 32}}},
        "training": {"epochs": 2, "lr": 2e-3, "batch_size": 16},
        "audit": {"train_sample": 24, "diversity_prompts": 6, "k_samples": 3,
                  "max_new_tokens": 12, "embedding_dispersion": False},
    }
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["train", "--config", str(path)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["audit", str(root / "run")])
    assert r.exit_code == 0, r.output
    return root / "run"


def test_audit_fills_store_for_every_checkpoint(audited):
    from finemem.audit import summarize

    s = summarize(audited)
    assert [r.name for r in s.rows] == ["step-000000", "step-000003", "step-000006"]
    for r in s.rows:
        acc = r.find("test/answer_accuracy")
        assert acc["n"] == 32 and acc["lo"] <= acc["value"] <= acc["hi"]
        assert r.get("test/perplexity") > 1 and r.get("train/perplexity") > 1
        assert r.n("ood/answer_accuracy") == 16
        assert r.has("test_preamble/accuracy_drop")
        assert r.n("test/distinct_fraction", k=3, first_line=False) == 6
        assert r.has("test/mean_pass_at_k", k=3) and r.has("test/mean_pass_at_k", k=1)
        assert 0 <= r.get("test/first_token_entropy")
    assert len(s.labels) == 3 and s.recommendation.name in {r.name for r in s.rows}
    assert (audited / "report" / "dynamics.png").stat().st_size > 1000
    # Fine-tuning lowers the test PPL of the reference solutions from the base model's.
    assert s.rows[-1].get("test/perplexity") < s.rows[0].get("test/perplexity")


def test_store_names_are_registry_names(audited):
    from finemem.metrics import metric_names
    from finemem.store import Store

    with Store(audited / "results.sqlite") as store:
        names = {r["name"] for r in store.metrics() if r["split"] != "*"}
        done = {r["name"] for r in store.metrics() if r["split"] == "*"}
    assert names <= set(metric_names()), names - set(metric_names())
    assert done == {"done:likelihood", "done:overmem"}


def test_rerun_computes_nothing_new(audited):
    from finemem.store import Store

    before = Store(audited / "results.sqlite").db.execute(
        "SELECT COUNT(*), MAX(rowid) FROM example_results").fetchone()
    r = runner.invoke(app, ["audit", str(audited), "--quiet"])
    assert r.exit_code == 0, r.output
    after = Store(audited / "results.sqlite").db.execute(
        "SELECT COUNT(*), MAX(rowid) FROM example_results").fetchone()
    assert before == after


def test_recommend_cli_explains(audited):
    r = runner.invoke(app, ["recommend", str(audited)])
    assert r.exit_code == 0
    assert "step-" in r.output and "PPL" in r.output


def test_merge_then_audit(audited):
    a, b = audited / "checkpoints" / "step-000003", audited / "checkpoints" / "step-000006"
    r = runner.invoke(app, ["merge", str(a), str(b), "--alpha", "0.5"])
    assert r.exit_code == 0, r.output
    out = audited / "merges" / "merge-step-000003-step-000006-a0.5"
    rec = json.loads((out / "finemem_ckpt.json").read_text())
    assert rec["kind"] == "full" and rec["alpha"] == 0.5
    r = runner.invoke(app, ["audit", str(audited), "--quiet"])
    assert r.exit_code == 0, r.output
    from finemem.audit import summarize

    s = summarize(audited)
    assert [m.name for m in s.merges] == [out.name]
    assert s.merges[0].n("test/answer_accuracy") == 32
    # The merge is shown: in the table, in recommend's candidates, with a stage label.
    assert len(s.merge_labels) == 1 and s.merge_labels[0].label in (
        "underfit", "healthy", "over-memorized", "overfit")
    r = runner.invoke(app, ["audit", str(audited)])
    assert r.exit_code == 0 and "(merge)" in r.output
    # A merge of the same two checkpoints again is refused, not overwritten.
    r = runner.invoke(app, ["merge", str(a), str(b)])
    assert r.exit_code != 0


def test_changed_eval_set_is_reaudited(audited):
    """Same training, a bigger OOD set: train is a no-op that refreshes config.yaml, and the
    audit recomputes the OOD metrics instead of serving the old ones."""
    from finemem.audit import summarize

    cfg = yaml.safe_load((audited / "config.yaml").read_text())
    cfg["data"]["eval"]["ood"]["n"] = 24
    path = audited.parent / "run-ood24.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["train", "--config", str(path)])
    assert r.exit_code == 0, r.output
    assert yaml.safe_load((audited / "config.yaml").read_text())["data"]["eval"]["ood"]["n"] == 24
    r = runner.invoke(app, ["audit", str(audited), "--quiet"])
    assert r.exit_code == 0, r.output
    assert {r.n("ood/answer_accuracy") for r in summarize(audited).rows} == {24}


def test_audit_of_non_run_is_one_line_error(tmp_path):
    from subprocess import run
    import sys

    p = run([sys.executable, "-m", "finemem.cli.__main__", "audit", str(tmp_path)],
            capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "config.yaml" in p.stderr
    assert "Traceback" not in p.stderr
