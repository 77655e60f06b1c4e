"""`finemem compare`: the comparison on synthetic runs (reduction and its interval, the
comparable-performance guard, shared examples, different data refused), and end to end on a
`builtin:test` sweep of full vs LoRA audited with the relaxed probe (run folders and the sweep
folder, CSV and plot, bad inputs: one line, exit 2)."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from finemem.analysis.compare import Side, compare, performance_gap, shared_ids
from finemem.cli import app
from finemem.errors import UserError

runner = CliRunner()


def _side(label, member_cos, *, method="lora", ppl=10.0, acc=None, ids=None, non_cos=None,
          manifest=None):
    ids = ids or [f"m{i}" for i in range(len(member_cos))]
    non_cos = non_cos if non_cos is not None else [0.3] * 20
    per = {"members": {i: {"cos": c, "exact": float(c >= 0.99), "verbatim": float(c >= 0.95)}
                       for i, c in zip(ids, member_cos)},
           "nonmembers": {f"n{i}": {"cos": c, "exact": 0.0, "verbatim": 0.0}
                          for i, c in enumerate(non_cos)}}
    return Side(label, Path(label), "step-000010", 10, 5.0,
                {"method": method, "model": "builtin:test", "lr": 1e-3, "lora_r": None,
                 "lora_alpha": None, "duplication": 1}, per,
                manifest if manifest is not None else {i: (10, 5) for i in ids},
                {"value": ppl, "lo": ppl * 0.9, "hi": ppl * 1.1, "n": 20},
                None if acc is None else {"value": acc, "lo": acc - 0.1, "hi": acc + 0.1})


def test_reduction_against_the_full_run_with_interval():
    full = _side("full", [1.0] * 40 + [0.2] * 10, method="full")    # 0.8 at threshold 0.8
    lora = _side("lora", [0.9] * 20 + [0.2] * 30, ppl=10.5)         # 0.4: 50% lower
    cmp = compare([lora, full], threshold=0.8, n_boot=2000)
    assert cmp.reference == "full"                                  # the full run, not first
    r = {row.side.label: row for row in cmp.rows}
    assert r["full"].reduction == {} and r["full"].comparable is None
    v, lo, hi = r["lora"].reduction["relaxed"]
    assert v == pytest.approx(0.5) and 0.25 < lo < 0.5 < hi < 0.75
    assert r["lora"].rates[("relaxed", "members")][0] == pytest.approx(0.4)
    assert r["lora"].reduction["exact"][0] == pytest.approx(1.0)    # exact: 0.8 -> 0
    assert r["lora"].comparable and not cmp.notes
    # the curve is monotone and the threshold is on it
    ts = [t for t, *_ in r["lora"].curve["members"]]
    assert 0.8 in ts and ts == sorted(ts)
    vals = [v for _, v, *_ in r["lora"].curve["members"]]
    assert all(a >= b for a, b in zip(vals, vals[1:]))
    # the excess over non-members (0.3 cosines: none memorized at 0.8)
    assert r["full"].excess["relaxed"][0] == pytest.approx(0.8)


def test_comparable_performance_guard():
    ref = _side("full", [1.0] * 10, method="full", ppl=10.0, acc=0.8)
    assert performance_gap(ref, _side("a", [1.0] * 10, ppl=10.9, acc=0.75), 0.10)[0]
    ok, why = performance_gap(ref, _side("b", [1.0] * 10, ppl=13.0, acc=0.8), 0.10)
    assert not ok and "test PPL +30%" in why
    ok, why = performance_gap(ref, _side("c", [1.0] * 10, ppl=10.0, acc=0.5), 0.10)
    assert not ok and "accuracy -0.30" in why
    cmp = compare([ref, _side("b", [0.5] * 10, ppl=13.0)], margin=0.10)
    assert cmp.rows[1].comparable is False
    assert any("not at comparable task performance" in n for n in cmp.notes)


def test_shared_examples_only_and_different_data_refused():
    a = _side("full", [1.0] * 30, method="full")
    b = _side("lora", [1.0] * 20, ids=[f"m{i}" for i in range(10, 30)])
    mem, non, notes = shared_ids([a, b])
    assert len(mem) == 20 and len(non) == 20
    assert any("compared on the 20 members shared by all runs" in n for n in notes)
    # the same ids on other examples (manifest rows differ): not shared
    c = _side("other", [1.0] * 30, manifest={f"m{i}": (99, 1) for i in range(30)})
    with pytest.raises(UserError, match="different data"):
        shared_ids([a, c])
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        compare([a, b], threshold=1.5)


# ------------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cmp")
    cfg = {"run_dir": "unused", "model": "builtin:test",
           "data": {"train": {"source": "builtin:qa", "split": "train", "n": 16},
                    "eval": {"test": {"source": "builtin:qa", "split": "test", "n": 16}},
                    "loss_on": "all", "max_length": 96},
           "training": {"epochs": 1, "lr": 3e-3, "batch_size": 8, "save_every": "epoch"},
           "audit": {"likelihood": {"train_sample": 8},
                     "extraction": {"members": 16, "nonmembers": 16, "prefix_tokens": 8,
                                    "suffix_tokens": 16, "length_bins": [40, 60]},
                     "relaxed": {"threshold": 0.7}}}
    (root / "base.yaml").write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["sweep", "--config", str(root / "base.yaml"), "--methods",
                            "full,lora", "--probes", "relaxed", "--out", str(root / "sw")])
    assert r.exit_code == 0, r.output
    return root / "sw"


@pytest.mark.integration
def test_relaxed_probe_stores_rates_curve_and_excess(sweep):
    from finemem.store import Store

    with Store(sweep / "method-full" / "results.sqlite") as s:
        rows = [m for m in s.metrics(checkpoint="step-000002")]
    rates = {(m["split"], json.loads(m["setting"])["threshold"]): m for m in rows
             if m["name"] == "relaxed_memorization_rate"}
    for split in ("members", "nonmembers"):
        curve = [rates[(split, t)]["value"] for t in
                 (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)]
        assert all(a >= b for a, b in zip(curve, curve[1:]))
        assert all(rates[(split, t)]["n"] == 16 for t in (0.5, 0.7, 1.0))
        m = rates[(split, 0.7)]
        assert m["lo"] <= m["value"] <= m["hi"]
    ex = [m for m in rows if m["name"] == "excess_over_nonmembers"
          and json.loads(m["setting"]).get("outcome") == "relaxed"]
    assert len(ex) == 11 and all(m["n"] == 32 for m in ex)
    from finemem.report.sections.relaxed import relaxed_summary

    line = relaxed_summary(sweep / "method-full")     # printed after `finemem audit`
    assert line.startswith("Relaxed memorization (MiniLM cosine >= 0.7) at step-000002")


@pytest.mark.integration
def test_compare_cli_on_runs_and_on_a_sweep_folder(sweep, tmp_path):
    out = tmp_path / "cmp"
    r = runner.invoke(app, ["compare", str(sweep / "method-full"), str(sweep / "method-lora"),
                            "--out", str(out), "--at", "final"])
    assert r.exit_code == 0, r.output
    assert "relaxed >= 0.7" in r.output and "reference" in r.output
    rows = list(csv.DictReader(open(out / "compare.csv")))
    assert [x["run"] for x in rows] == ["method-full", "method-lora"]
    assert rows[0]["comparable"] == "reference" and rows[1]["comparable"] in ("True", "False")
    assert rows[1]["relaxed_reduction"] == "" or -10 < float(rows[1]["relaxed_reduction"]) <= 1
    assert (out / "threshold_curves.png").stat().st_size > 1000
    curves = list(csv.DictReader(open(out / "compare_curves.csv")))
    assert len(curves) == 2 * 2 * 11
    # the sweep folder stands for its cells; step-N and recommended pick checkpoints
    r = runner.invoke(app, ["compare", str(sweep), "--out", str(out), "--at", "step-2",
                            "--threshold", "0.9"])
    assert r.exit_code == 0, r.output
    assert "relaxed >= 0.9" in r.output and "step-000002" in r.output
    r = runner.invoke(app, ["compare", str(sweep), "--out", str(out), "--at", "recommended"])
    assert r.exit_code == 0, r.output


@pytest.mark.integration
def test_compare_bad_inputs_one_line_exit_2(sweep, tmp_path):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "finemem", "compare", str(sweep), "--threshold",
                        "1.5", "--out", str(tmp_path)], capture_output=True, text=True,
                       timeout=120)
    err = p.stderr.strip()
    assert p.returncode == 2 and "[0, 1]" in err and len(err.splitlines()) == 1, err

    def cli(*args):  # in process: the UserError main() turns into one line and exit 2
        r = runner.invoke(app, ["compare", *map(str, args), "--out", str(tmp_path)])
        assert r.exit_code != 0 and isinstance(r.exception, UserError), r.output
        assert "\n" not in str(r.exception)
        return str(r.exception)

    assert "no checkpoint step-99" in cli(sweep, "--at", "step-99")
    assert "at least two runs" in cli(sweep / "method-full")
    assert "--at 'latest'" in cli(sweep, "--at", "latest")
    # a run on other data (its manifest rows differ): no shared training example
    other = tmp_path / "other"
    other.mkdir()
    shutil.copytree(sweep / "method-lora", other / "lora")
    man = other / "lora" / "manifest.jsonl"
    man.write_text("\n".join(json.dumps({**json.loads(x), "prompt_chars": 1})
                             for x in man.read_text().splitlines() if x.strip()) + "\n")
    assert "different data" in cli(sweep / "method-full", other / "lora")


@pytest.mark.integration
def test_lora_vs_full_report_from_stored_results(sweep, tmp_path):
    from finemem.config import load_config
    from finemem.experiments.lora_vs_full import merge, report

    assert merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2},
                                                                       "d": 1}
    cfgs = {n: load_config(sweep / n / "config.yaml") for n in ("method-full", "method-lora")}
    plan = {"threshold": 0.7, "margin": 0.25, "claimed_reduction": 0.42,
            "methods": {"reference": "method-full", "others": ["method-lora"]},
            "duplication": ["method-full", "method-lora"],
            "size": {"smaller": "method-lora", "larger": "method-full"}}
    md = report(cfgs, plan, minutes=1.0, plot=tmp_path / "img" / "curves.png")
    for heading in ("## Every run, final checkpoint", "## Claim: LoRA and head-only",
                    "## Claim: full fine-tuning memorizes more with duplication",
                    "## Claim: full fine-tuning memorizes more with model size"):
        assert heading in md
    assert "| method-lora | lora (r16, alpha 32)" in md and "42%" in md
    assert md.count("**") >= 6                          # a verdict per claim
    from finemem.experiments import MACHINE_NOTE
    assert md.split("\n")[4] == MACHINE_NOTE             # the second paragraph
    assert (tmp_path / "img" / "curves.png").is_file()
    # a real model's settings name no second size: the claim says it was not run
    real = report(cfgs, {**{k: v for k, v in plan.items() if k not in ("size", "duplication")},
                         "tried": ["lr 1e-4: nothing memorized"]}, minutes=1.0,
                  model="smollm2-135m")
    assert "Not run: these settings train no duplicated runs" in real
    assert "## Settings tried before these\n\n- lr 1e-4: nothing memorized" in real
    assert real.startswith("# Replication on a real model (`smollm2-135m`)")
    assert "`finemem reproduce lora-vs-full --model smollm2-135m`" in real
    size = real.split("## Claim: full fine-tuning memorizes more with model size")[1]
    assert size.strip().startswith("Not run: these settings train one model (smollm2-135m)")
    from finemem.experiments import REAL_MODEL_NOTE
    assert REAL_MODEL_NOTE in real and MACHINE_NOTE not in real
