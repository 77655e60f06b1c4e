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
        acc = r.metrics["test/accuracy"]
        assert acc["n"] == 32 and acc["lo"] <= acc["value"] <= acc["hi"]
        assert r.get("test/ppl") > 1 and r.get("train/ppl") > 1
        assert r.metrics["ood/accuracy"]["n"] == 16
        assert "test_preamble/accuracy_drop" in r.metrics
        assert r.metrics["test/distinct@3"]["n"] == 6
        assert 0 <= r.get("test/first_token_entropy")
    assert len(s.labels) == 3 and s.recommendation.name in {r.name for r in s.rows}
    assert (audited / "report" / "dynamics.png").stat().st_size > 1000
    # Fine-tuning lowers the test PPL of the reference solutions from the base model's.
    assert s.rows[-1].get("test/ppl") < s.rows[0].get("test/ppl")


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
    assert s.merges[0].metrics["test/accuracy"]["n"] == 32
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
    assert {r.metrics["ood/accuracy"]["n"] for r in summarize(audited).rows} == {24}


def test_audit_of_non_run_is_one_line_error(tmp_path):
    from subprocess import run
    import sys

    p = run([sys.executable, "-m", "finemem.cli.__main__", "audit", str(tmp_path)],
            capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "config.yaml" in p.stderr
    assert "Traceback" not in p.stderr


def _row(name, epoch, **metrics):
    return SimpleNamespace(name=name, epoch=epoch, metrics={
        k: {"value": v[0], "lo": v[1], "hi": v[2], "n": 100} for k, v in metrics.items()},
        get=lambda key, m=metrics: m[key][0] if key in m else math.nan)


def test_verdicts():
    from finemem.reproduce_claims import verdict

    rec = _row("a", 1, **{"x/accuracy": (0.9, 0.85, 0.95)})
    lower = _row("b", 5, **{"x/accuracy": (0.7, 0.6, 0.8)})
    close = _row("c", 5, **{"x/accuracy": (0.88, 0.82, 0.93)})
    assert verdict(rec, lower, "x/accuracy", expect="lower").startswith("held")
    assert verdict(rec, close, "x/accuracy", expect="lower").startswith("direction only")
    assert verdict(rec, lower, "x/accuracy", expect="higher").startswith("did not hold")
    assert verdict(rec, None, "x/accuracy", expect="lower") == "not measured"
    nan = float("nan")
    no_ci = _row("d", 5, **{"x/accuracy": (0.5, nan, nan)})
    assert verdict(rec, no_ci, "x/accuracy", expect="lower") == \
        "direction only, no interval (0.500 vs 0.900)"


def test_demo_signature_needs_consecutive_checkpoints():
    from finemem.demo import signature

    accs = [0.0, 0.95, 0.96, 0.95, 0.94, 0.80]
    ratios = [1.0, 1.0, 1.1, 1.35, 1.5, 1.9]
    rows = [_row(f"s{i}", i, **{"test/accuracy": (a, a, a)}) for i, a in enumerate(accs)]
    s = SimpleNamespace(rows=rows, labels=[SimpleNamespace(ppl_ratio=r) for r in ratios],
                        column=lambda key: [r.get(key) for r in rows])
    assert [r.name for r in signature(s)] == ["s3", "s4"]  # s5 fell 16 points: not counted
    assert signature(s, ratio=2.0) == []
