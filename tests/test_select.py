"""`finemem audit --checkpoints`: the selection's items (unit, on plain refs), and end to end
`--checkpoints recommended,last --probes extraction` audits just those, with the store and
the report saying which checkpoints it covered."""

import pytest
import yaml
from typer.testing import CliRunner

from finemem.audit.select import parse_selection, pick_checkpoints
from finemem.cli import app
from finemem.engine.checkpoints import CheckpointRef
from finemem.errors import UserError

runner = CliRunner()


def _ref(step, kind="full", name=None):
    return CheckpointRef(name or f"step-{step:06d}", step, step / 10, kind,
                         None if kind == "base" else f"/x/{step}", "/base", f"h{step}")


REFS = [_ref(0, "base")] + [_ref(s) for s in (10, 20, 30, 40, 50, 60)]
MERGES = [_ref(35, name="merge-a")]


class _Summary:
    graded = True

    class recommendation:
        name = "step-000030"

    class _Row:
        def __init__(self, name, step, acc):
            self.name, self.step, self._acc = name, step, acc

        def get(self, key):
            return self._acc

    rows = [_Row("step-000000", 0, 0.1), _Row("step-000010", 10, 0.5),
            _Row("step-000020", 20, 0.9), _Row("step-000030", 30, 0.9),
            _Row("step-000040", 40, 0.8)]


def names(spec, **kw):
    return [r.name for r in pick_checkpoints(spec, REFS, MERGES, **kw)]


def test_items():
    assert names(None) == [r.name for r in REFS + MERGES]
    assert names("last") == ["step-000000", "step-000060"]
    assert names("last", base=False) == ["step-000060"]
    assert names("every:2") == ["step-000000", "step-000020", "step-000040", "step-000060"]
    assert names("steps:20-40", base=False) == ["step-000020", "step-000030", "step-000040"]
    assert names("step-000010,merge-a", base=False) == ["step-000010", "merge-a"]
    assert names("recommended,last", summary=_Summary) == ["step-000000", "step-000030",
                                                           "step-000060"]
    assert names("best", base=False, summary=_Summary) == ["step-000020"]  # ties: earliest
    assert names(None, base=False)[0] == "step-000010"


@pytest.mark.parametrize("spec,fragment", [("every:0", "every:N"), ("steps:4", "steps:A-B"),
                                           ("", "empty"), ("step-00010", "did you mean"),
                                           ("steps:70-90", "steps:10-60")])
def test_bad_selections_name_the_fix(spec, fragment):
    with pytest.raises(UserError, match=fragment):
        names(spec) if spec.startswith(("step-", "steps:7")) else parse_selection(spec)


def test_suggested_range_works():
    with pytest.raises(UserError) as e:
        names("steps:70-90")
    fix = str(e.value).split("(e.g. ")[1].rstrip(")")
    assert names(fix, base=False) == [r.name for r in REFS[1:]]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("select")
    cfg = {"run_dir": str(root / "run"), "model": "builtin:test", "device": "cpu",
           "data": {"train": {"source": "builtin:arith", "split": "train", "n": 16},
                    "eval": {"test": {"source": "builtin:arith", "split": "test", "n": 16}}},
           "training": {"epochs": 4, "lr": 3e-3, "batch_size": 8},
           "audit": {"overmem": {"max_new_tokens": 16, "diversity_prompts": 4,
                                 "k_samples": 2, "embedding_dispersion": False},
                     "extraction": {"members": 8, "nonmembers": 8}}}
    (root / "run.yaml").write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["train", "--config", str(root / "run.yaml"), "--no-progress"])
    assert r.exit_code == 0, r.output
    return root / "run"


@pytest.mark.integration
def test_recommended_and_last_only(run):
    from finemem.audit import summarize
    from finemem.report.html import write_report
    from finemem.store import Store

    r = runner.invoke(app, ["audit", str(run), "--checkpoints", "recommended,last",
                            "--probes", "extraction", "--no-progress", "--quiet"])
    assert r.exit_code == 0, r.output
    rec = summarize(run).recommendation.name
    want = sorted({"step-000000", rec, "step-000008"})
    with Store(run / "results.sqlite") as s:
        done = sorted(m["checkpoint"] for m in s.metrics() if m["name"] == "done:extraction")
        stage = {m["checkpoint"] for m in s.metrics() if m["name"] == "done:overmem"}
        audits = s.audits()
    assert done == want
    assert len(stage) == 5  # the first, cheap pass: the stage table's probes on every one
    assert audits[-1]["selection"] == "recommended,last"
    assert sorted(audits[-1]["checkpoints"]) == want and audits[-1]["probes"] == ["extraction"]
    html = write_report([run]).read_text()
    assert "recommended,last" in html and f"extraction on {len(want)}: " in html


def test_ship_leakage_lines_say_what_each_figure_counts():
    from finemem.analysis.leakage import Budget, pick_within
    from finemem.report.leakage import ship_leakage_lines

    def row(name, step, acc, auc):
        return {"name": name, "step": step, "epoch": step / 10, "acc": acc, "acc_n": 500,
                "ppl": 2.0, "merged": False, "auc": auc, "auc_lo": auc - .02,
                "auc_hi": auc + .02, "tpr": 0.4, "tpr_lo": 0.33, "tpr_hi": 0.47,
                "extraction": 0.1, "extraction_lo": 0.06, "extraction_hi": 0.15,
                "members": 200, "nonmembers": 200}

    rows = [row("step-000000", 0, 0.0, 0.5), row("step-000010", 10, 0.6, 0.58),
            row("step-000020", 20, 0.95, 0.9)]
    pick = pick_within(rows, Budget("auc", 0.6), graded=True)
    lines = ship_leakage_lines(rows, "step-000020", pick, attack="loss")
    assert "membership AUC 0.900 [0.88, 0.92]" in lines[0]
    assert "TPR at 1% FPR 0.400 [0.33, 0.47]" in lines[0]
    assert "whole completion" in lines[0] and "200 members, 200 non-members" in lines[0]
    assert lines[1].startswith("Within auc <= 0.6: step-000010")
    assert "gives up 0.350 test accuracy (0.950 -> 0.600)" in lines[2]
    within = ship_leakage_lines(rows, "step-000010", pick, attack="loss")
    assert "no accuracy is given up" in within[2]
