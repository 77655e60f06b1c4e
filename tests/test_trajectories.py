"""Memorization trajectories: first extractable checkpoint, forgotten, never (by hand), and
`finemem trajectories` on the shared canary run (stored values only)."""

import csv
import math
import sys

import pytest
from typer.testing import CliRunner

from finemem.analysis.trajectories import Trajectory, summarize_trajectories, write_csv

CK = [{"name": f"step-{i:06d}", "step": i, "epoch": float(i)} for i in range(4)]


def _t(i, exact):
    return Trajectory(i, "membership", 1, nll=[1.0, 0.5, 0.2, 0.3], exact=exact)


def test_first_forgotten_never_by_hand(tmp_path):
    ts = [_t("a", [False, True, True, True]),     # memorized at 1, kept
          _t("b", [False, False, True, False]),   # memorized at 2, forgotten
          _t("c", [False, False, False, False]),  # never
          _t("d", [False, True, None, None])]     # memorized at 1, last known state True
    assert [t.first() for t in ts] == [1, 2, None, 1]
    assert [t.forgotten for t in ts] == [False, True, False, False]
    s = summarize_trajectories(CK, ts)
    assert [c["new"] for c in s["by_checkpoint"]] == [0, 2, 1, 0]
    assert [c["cumulative"] for c in s["by_checkpoint"]] == [0, 2, 3, 3]
    assert (s["memorized"], s["forgotten"], s["never"]) == (3, 1, 1)
    rows = list(csv.DictReader(write_csv(tmp_path / "t.csv", CK, ts).open()))
    assert rows[1]["first_extractable"] == "step-000002" and rows[1]["forgotten"] == "1"
    assert rows[2]["first_extractable"] == "" and rows[2]["extractable_at_end"] == "0"
    assert float(rows[0]["nll@step-000003"]) == 0.3


@pytest.fixture(scope="module")
def run():
    from _membership_run import canary_run

    return canary_run()[0]


@pytest.mark.integration
def test_cli_exports_rows_per_example(run, tmp_path):
    from finemem.cli import app

    out = tmp_path / "rows.csv"
    r = CliRunner().invoke(app, ["trajectories", str(run), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "memorization trajectories" in r.output and "became extractable" in r.output
    rows = list(csv.DictReader(out.open()))
    assert sum(x["split"] == "membership" for x in rows) == 24    # the sampled members
    assert sum(x["split"] == "canaries" for x in rows) == 20      # the inserted canaries
    nll_cols = [k for k in rows[0] if k.startswith("nll@")]
    assert nll_cols[0] == "nll@step-000000" and len(nll_cols) == 4  # base + 3 epochs
    # loss across checkpoints: the 16x canaries' NLL falls from the base to the last epoch
    can16 = [x for x in rows if x["id"].startswith("canary-random-t16")]
    assert all(float(x[nll_cols[-1]]) < float(x[nll_cols[0]]) for x in can16)
    assert all(not math.isnan(float(x[c])) for x in can16 for c in nll_cols)
    for x in rows:
        if x["first_extractable"]:
            assert x["first_extractable"] in {c[4:] for c in nll_cols}
    assert any(x["times_per_epoch"] == "16" for x in rows)


@pytest.mark.integration
def test_run_without_results_is_refused(tmp_path, monkeypatch, capsys):
    from finemem.cli import main

    monkeypatch.setattr(sys, "argv", ["finemem", "trajectories", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "no results store" in err
    assert not (tmp_path / "report").exists()
