"""`finemem train` with trackers (report_to) and the online over-memorization stop."""

from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

from finemem.cli import app

pytestmark = pytest.mark.integration
runner = CliRunner()


def _config(root, **training):
    cfg = {"run_dir": str(root / "run"), "model": "builtin:test",
           "data": {"train": {"source": "builtin:arith", "split": "train", "n": 16},
                    "eval": {"test": {"source": "builtin:arith", "split": "test", "n": 8}}},
           "training": {"epochs": 4, "lr": 2e-3, "batch_size": 8, "save_every": "epoch",
                        **training},
           "audit": {"likelihood": {"train_sample": 8},
                     "overmem": {"diversity_prompts": 2, "k_samples": 2, "max_new_tokens": 8,
                                 "embedding_dispersion": False}}}
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_loss_goes_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    r = runner.invoke(app, ["train", "--config", str(_config(tmp_path,
                                                              report_to=["tensorboard"]))])
    assert r.exit_code == 0, r.output
    events = list((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    losses = acc.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(1, 9)) and losses[-1].value > 0


def test_unknown_tracker_is_refused_before_anything_is_written(tmp_path):
    r = runner.invoke(app, ["train", "--config", str(_config(tmp_path, report_to=["nope"]))])
    assert isinstance(r.exception, Exception) and "unknown tracker 'nope'" in str(r.exception)
    assert not (tmp_path / "run").exists()


def test_stops_after_n_overmemorized_checkpoints(tmp_path, monkeypatch):
    import finemem.audit as audit

    # The stage rule's verdicts, checkpoint by checkpoint: over-memorized from the 2nd on.
    labels = ["healthy", "over-memorized", "over-memorized", "over-memorized"]
    seen = []

    def fake_audit(run_dir, **kw):
        seen.append(kw)

    def fake_summary(run_dir):
        k = len(seen)
        return SimpleNamespace(graded=True,
                               labels=[SimpleNamespace(label=x) for x in labels[:k]],
                               recommendation=SimpleNamespace(name="step-000002",
                                                              explanation="best before"))

    monkeypatch.setattr(audit, "audit_run", fake_audit)
    monkeypatch.setattr(audit, "summarize", fake_summary)
    path = _config(tmp_path, stop_after_overmemorized=2)
    r = runner.invoke(app, ["train", "--config", str(path)])
    assert r.exit_code == 0, r.output
    assert "stopped early" in r.output and "step-000002" in r.output
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*"))
    assert ckpts == ["step-000002", "step-000004", "step-000006"]   # stopped at the 3rd of 4
    from finemem.store import Store

    with Store(tmp_path / "run" / "results.sqlite") as s:
        status = s.db.execute("SELECT status FROM runs").fetchone()[0]
    assert status == "stopped-early"
    # A rerun does not train past the stop.
    r = runner.invoke(app, ["train", "--config", str(path)])
    assert r.exit_code == 0 and "already complete" in r.output
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*")) == ckpts
