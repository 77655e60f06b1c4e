"""`FinememCallback` in a plain `Trainer` script (full fine-tuning) and in a TRL `SFTTrainer`
script (LoRA) on the `test` model: each ends with a populated results store that `finemem
report` renders, and the audit metrics are in the TensorBoard event files. Plus the online
stage rule that stops training."""

import glob
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from finemem.cli import app

pytestmark = pytest.mark.integration
runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _scalars(out_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = {}
    for d in glob.glob(str(out_dir / "runs" / "*")):
        ea = EventAccumulator(d)
        ea.Reload()
        for tag in ea.Tags()["scalars"]:
            found[tag] = [(e.step, e.value) for e in ea.Scalars(tag)]
    return found


def assert_run_checked(cb, out_dir: Path, kind: str) -> None:
    from finemem.audit import summarize
    from finemem.store import Store

    run = out_dir / "finemem"
    assert cb.run_dir == run
    with Store(run / "results.sqlite") as store:
        ckpts = store.checkpoints()
    assert [(c["name"], c["kind"]) for c in ckpts] == [("step-000004", kind),
                                                       ("step-000008", kind)]
    s = summarize(run)
    assert [r.name for r in s.rows] == ["step-000000", "step-000004", "step-000008"]
    assert all(r.has("test/answer_accuracy") and r.has("train/perplexity") for r in s.rows)
    assert cb.ship["name"] == s.recommendation.name
    assert [h["name"] for h in cb.history] == ["step-000004", "step-000008"]
    r = runner.invoke(app, ["report", str(run)])
    assert r.exit_code == 0, r.output
    html = (run / "report" / "index.html").read_text("utf-8")
    assert 'data-plot="dynamics"' in html and "step-000008" in html
    tb = _scalars(out_dir)
    ppl = tb["train/finemem/test/perplexity"]          # rewritten by the TensorBoard callback
    assert [step for step, _ in ppl] == [4, 8]
    assert abs(ppl[-1][1] - s.rows[-1].get("test/perplexity")) < 1e-3
    assert "train/finemem/test/answer_accuracy" in tb and "train/loss" in tb


@pytest.fixture(scope="module")
def trainer_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("trainer") / "out"
    mod = runpy.run_path(str(EXAMPLES / "hf_trainer_callback.py"), run_name="example")
    return mod["main"](str(out)), out


def test_plain_trainer_script(trainer_run):
    cb, out = trainer_run
    assert_run_checked(cb, out, "full")


def test_trl_sft_trainer_script_lora(tmp_path):
    pytest.importorskip("trl")
    mod = runpy.run_path(str(EXAMPLES / "trl_sft_callback.py"), run_name="example")
    cb = mod["main"](str(tmp_path / "out"), lora=True)
    assert_run_checked(cb, tmp_path / "out", "lora")


def test_online_streak_stops_within_n_of_the_full_run_onset():
    from finemem.analysis.stages import StageRule, label_stages
    from finemem.integrations.callback import online_streak

    acc = [0.0, 0.4, 0.8, 0.9, 0.92, 0.91, 0.92, 0.9, 0.91, 0.6]
    ppl = [50.0, 6.0, 3.0, 2.5, 2.4, 3.3, 3.6, 4.0, 4.5, 9.0]
    n = [100] * len(acc)
    full = label_stages(acc, ppl, acc_n=n, rule=StageRule())
    onset = full.first("over-memorized")
    assert onset == 5
    for N in (1, 2, 3):
        stop = next(i for i in range(len(acc)) if online_streak(
            label_stages(acc[:i + 1], ppl[:i + 1], acc_n=n[:i + 1]).labels) >= N)
        assert stop == onset + N - 1


def test_stop_after_overmemorized_sets_should_training_stop(trainer_run, monkeypatch):
    """The callback's decision on an already audited save (nothing is recomputed): with the
    summary saying the last two checkpoints are over-memorized, N=2 stops training and names
    the checkpoint to ship."""
    import finemem.audit as audit
    from finemem.integrations.callback import FinememCallback

    first, out = trainer_run
    real = audit.summarize(out / "finemem")
    labels = [SimpleNamespace(label=x) for x in ("underfit", "over-memorized", "over-memorized")]
    fake = SimpleNamespace(labels=labels, graded=True, row=real.row,
                           recommendation=SimpleNamespace(name="step-000004",
                                                          explanation="best accuracy"))
    monkeypatch.setattr(audit, "summarize", lambda run_dir: fake)
    cb = FinememCallback(data={}, run_dir=out / "finemem", stop_after_overmemorized=2,
                         verbose=False)
    cb.kind, cb.base_model = "full", first.base_model
    state = SimpleNamespace(is_world_process_zero=True, global_step=8, epoch=2.0,
                            log_history=[])
    control = SimpleNamespace(should_training_stop=False)
    cb.on_save(SimpleNamespace(output_dir=str(out)), state, control)
    assert control.should_training_stop and cb.stopped_at == "step-000008"
    assert cb.ship["checkpoint"] == str(out / "checkpoint-4")
    assert state.log_history[-1]["finemem/overmemorized_streak"] == 2.0
    assert "finemem/test/perplexity" in state.log_history[-1]


def test_two_processes_audit_together_and_stop_together(tmp_path):
    """`torchrun --nproc_per_node 2` (gloo, CPU): the main process registers the checkpoint,
    both processes take part in its audit, and the main process's stop decision reaches the
    other one, so both stop at the first save (step 4 of 8) instead of one waiting forever."""
    import json
    import os
    import subprocess
    import sys

    from finemem.store import Store

    out = tmp_path / "ddp"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        str(Path(__file__).resolve().parent / "_ddp_callback_run.py"),
                        str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    seen = [json.loads((out / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert [s["global_step"] for s in seen] == [4, 4]
    assert seen[0]["stopped_at"] == "step-000004" and seen[1]["stopped_at"] is None
    with Store(out / "finemem" / "results.sqlite") as store:
        names = {c["name"] for c in store.checkpoints()}
        assert names == {"step-000004"}
        assert store.metrics(checkpoint="step-000004")
