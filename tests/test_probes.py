"""The probe loop end to end on the `test`-size model: every built-in task and a user JSONL
audit, `--probes` selection, unknown probes, and a probe added in one place."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from finemem.cli import app

pytestmark = pytest.mark.integration
runner = CliRunner()
SMALL_AUDIT = {"likelihood": {"train_sample": 8},
               "overmem": {"diversity_prompts": 3, "k_samples": 2, "max_new_tokens": 12,
                           "embedding_dispersion": False}}


def _train(root, name, data, **audit):
    cfg = {"run_dir": str(root / name), "model": "builtin:test", "data": data,
           "training": {"epochs": 1, "lr": 2e-3, "batch_size": 8},
           "audit": {**SMALL_AUDIT, **audit}}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["train", "--config", str(path)])
    assert r.exit_code == 0, r.output
    return root / name


@pytest.mark.parametrize("task", ["arith", "summarize", "dialog", "qa", "translate",
                                  "sentiment"])
def test_every_builtin_task_audits(tmp_path, task):
    from finemem.audit import summarize
    from finemem.data.tasks import get_task

    # max_length: the test model has 256 positions; summaries and dialogs run longer
    run = _train(tmp_path, task, {"train": {"source": f"builtin:{task}", "n": 16},
                                  "eval": {"test": {"source": f"builtin:{task}", "split": "test",
                                                    "n": 8}}, "max_length": 256})
    r = runner.invoke(app, ["audit", str(run)])
    assert r.exit_code == 0, r.output
    s = summarize(run)
    assert [row.name for row in s.rows][0] == "step-000000" and len(s.rows) == 2
    assert all(row.get("test/perplexity") > 1 for row in s.rows)
    graded = get_task(task).answer_extractor is not None
    assert s.graded == graded
    assert s.recommendation.name in {row.name for row in s.rows}
    assert "Recommended checkpoint" in s.recommendation.explanation
    assert (run / "report" / "dynamics.png").stat().st_size > 1000
    if not graded:
        assert {lab.label for lab in s.labels} == {"ungraded"}
        assert "no graded answers" in s.recommendation.explanation
        assert s.rows[-1].has("test/distinct_fraction", k=2, first_line=False)


def test_user_jsonl_without_answers_audits(tmp_path):
    from finemem.audit import summarize

    rows = [{"question": f"what colour is item {i}?", "reply": f" item {i} is {c}."}
            for i, c in enumerate(["red", "blue", "green", "black"] * 6)]
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    fields = {"prompt": "question", "completion": "reply"}
    run = _train(tmp_path, "mine", {
        "train": {"source": str(data), "n": 16, "fields": fields},
        "eval": {"test": {"source": str(data), "fields": fields}}})
    r = runner.invoke(app, ["audit", str(run)])
    assert r.exit_code == 0, r.output
    # The test set is the training file: the audit says so, with the count.
    assert "overlaps the training data: 16 of 24" in r.output.replace("\n", " ")
    s = summarize(run)
    assert not s.graded and len(s.rows) == 2
    r = runner.invoke(app, ["recommend", str(run)])
    assert r.exit_code == 0 and "lowest test PPL" in r.output


def test_probes_option_runs_what_is_needed_and_only_that(tmp_path):
    from finemem.store import Store

    run = _train(tmp_path, "sel", {"train": {"source": "builtin:arith", "n": 16},
                                   "eval": {"test": {"source": "builtin:arith", "split": "test",
                                                     "n": 8}}})
    r = runner.invoke(app, ["audit", str(run), "--probes", "likelihood", "--quiet"])
    assert r.exit_code == 0, r.output
    with Store(run / "results.sqlite") as st:
        assert {m["name"] for m in st.metrics() if m["split"] == "*"} == {"done:likelihood"}
        assert not st.metrics(name="answer_accuracy")
    r = runner.invoke(app, ["audit", str(run), "--probes", "overmem"])  # pulls in likelihood
    assert r.exit_code == 0, r.output
    assert "ship" in r.output
    with Store(run / "results.sqlite") as st:
        assert {m["name"] for m in st.metrics() if m["split"] == "*"} == {
            "done:likelihood", "done:overmem"}
    r = runner.invoke(app, ["audit", str(run), "--probes", "overmen"])
    assert r.exit_code != 0
    assert "Did you mean: overmem" in str(r.exception) + r.output


def test_a_probe_is_one_registered_class(tmp_path):
    """A new probe needs no change to the loop: register it, name it, it runs on every
    checkpoint once, and its done-key stops a second run; its settings (`Config`, in its own
    file) are its config section, validated at the door."""
    from pydantic import Field

    from finemem.audit import audit_run
    from finemem.audit.probes import PROBES, Probe, register_probe
    from finemem.config import PROBE_SETTINGS, Section, parse_config
    from finemem.errors import UserError
    from finemem.metrics import token_accuracy

    calls = []

    class CountTokensConfig(Section):
        split: str = Field("test", description="eval set to score")

    @register_probe("count_tokens_test")
    class CountTokens(Probe):
        Config = CountTokensConfig
        description = "test probe"
        default = False

        def prepare(self, ctx):
            self.examples = ctx.eval_sets()[self.cfg.split].examples
            self.inputs = [e.id for e in self.examples]

        def run(self, ctx, ref, model):
            scores = ctx.score(ref, model, self.examples)
            calls.append(ref.name)
            ctx.put(ref, "test", "token_accuracy", token_accuracy([s.correct for s in scores]),
                    n=len(scores))

    try:
        run = _train(tmp_path, "toy", {"train": {"source": "builtin:arith", "n": 16},
                                       "eval": {"test": {"source": "builtin:arith",
                                                         "split": "test", "n": 8}}})
        audit_run(run, probes=["count_tokens_test"], progress=False)
        assert calls == ["step-000000", "step-000002"]
        audit_run(run, probes=["count_tokens_test"], progress=False)
        assert len(calls) == 2
        raw = {"run_dir": "x", "data": {"train": {"source": "builtin:arith"}}}
        cfg = parse_config({**raw, "audit": {"count_tokens_test": {"split": "test"}}})
        assert isinstance(cfg.audit.section("count_tokens_test"), CountTokensConfig)
        with pytest.raises(UserError, match=r"audit.count_tokens_test.splits.*unknown key"):
            parse_config({**raw, "audit": {"count_tokens_test": {"splits": "test"}}})
    finally:
        PROBES.pop("count_tokens_test")
        PROBE_SETTINGS.pop("count_tokens_test")


def test_probe_sections_are_validated_at_the_door(tmp_path):
    from finemem.config import parse_config
    from finemem.errors import UserError

    base = {"run_dir": "x", "data": {"train": {"source": "builtin:arith"}}}
    with pytest.raises(UserError, match=r"audit.overmem.k_samples"):
        parse_config({**base, "audit": {"overmem": {"k_samples": 1}}})
    with pytest.raises(UserError, match=r"audit.overmemm.*unknown key"):
        parse_config({**base, "audit": {"overmemm": {}}})
    with pytest.raises(UserError, match=r"answer_regex"):
        parse_config({**base, "audit": {"overmem": {"answer_extractor": "regex"}}})
    # Run folders written before sections existed still load: flat keys go to their probe.
    cfg = parse_config({**base, "audit": {"train_sample": 7, "k_samples": 3}})
    assert cfg.audit.section("likelihood").train_sample == 7
    assert cfg.audit.section("overmem").k_samples == 3


def test_two_worker_processes_store_what_one_does(tmp_path):
    import shutil

    from finemem.audit import audit_run
    from finemem.store import Store

    run = _train(tmp_path, "par", {"train": {"source": "builtin:arith", "n": 16},
                                   "eval": {"test": {"source": "builtin:arith", "split": "test",
                                                     "n": 8}}})
    twin = tmp_path / "par-twin"
    shutil.copytree(run, twin)
    audit_run(run, progress=False)
    r = runner.invoke(app, ["audit", str(twin), "--workers", "2", "--quiet"])
    assert r.exit_code == 0, r.output

    def rows(folder):
        with Store(folder / "results.sqlite") as st:
            return {(m["checkpoint"], m["split"], m["name"], m["setting"], m["n"]): m["value"]
                    for m in st.metrics()}

    one, two = rows(run), rows(twin)
    assert one.keys() == two.keys() and len(one) > 20
    # Equal up to float summation order: workers run 1 torch thread each, which can flip a
    # sampled token at a near-tie (seen on the demo: 4 of 465 diversity values, within 0.002).
    assert all(two[k] == pytest.approx(v, abs=0.02) for k, v in one.items())


def test_ctrl_c_exits_130_with_a_line(monkeypatch, capsys):
    import sys

    import finemem.audit.loop as loop
    from finemem.cli import main

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "audit_run", interrupted)
    monkeypatch.setattr(sys, "argv", ["finemem", "audit", "somewhere"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 130
    assert "interrupted" in capsys.readouterr().err
