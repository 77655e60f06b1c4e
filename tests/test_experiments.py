"""Experiments: the registry, the shipped experiment settings, the sweep's grid and cell names,
and the replication report's verdicts and claim directions (on hand-made summaries)."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from finemem.audit.summary import Row
from finemem.errors import UserError
from finemem.experiments import experiment_names, get_experiment


# -- registry ---------------------------------------------------------------------------------

def test_registry_lists_and_finds():
    assert {"demo", "over-memorization"} <= set(experiment_names())
    assert "over-memorization" in experiment_names(reproducible=True)
    assert "demo" not in experiment_names(reproducible=True)
    exp = get_experiment("over-memorization")
    assert exp.name == "over-memorization" and exp.description and exp.reproducible


def test_unknown_experiment_suggests_closest():
    with pytest.raises(UserError) as e:
        get_experiment("over-memorisation")
    msg = str(e.value)
    assert "Unknown experiment 'over-memorisation'" in msg
    assert "Did you mean: over-memorization?" in msg and "Available: demo" in msg


def test_reproduce_cli_refuses_demo_and_unknown():
    from finemem.cli import app

    r = CliRunner().invoke(app, ["reproduce", "demo"])
    assert r.exit_code != 0 and "finemem demo" in str(r.exception)
    r = CliRunner().invoke(app, ["reproduce", "over-memorisatoin"])
    assert r.exit_code != 0 and "Did you mean: over-memorization?" in str(r.exception)
    r = CliRunner().invoke(app, ["reproduce", "--help"])
    assert "over-memorization" in r.output  # the argument's help comes from the registry


# -- shipped settings -------------------------------------------------------------------------

@pytest.mark.parametrize("name", experiment_names())
def test_every_shipped_experiment_validates(name, tmp_path):
    cfgs = get_experiment(name).configs(tmp_path)
    assert cfgs
    for run, cfg in cfgs.items():
        assert Path(cfg.run_dir).parent == tmp_path or Path(cfg.run_dir) == tmp_path


@pytest.mark.parametrize("name", experiment_names(reproducible=True))
def test_real_model_settings(name, tmp_path):
    """`reproduce NAME --model M`: the shipped real-model settings validate with M in every run,
    whose folders sit under OUT/<M>, and the report goes to its own section and figure."""
    exp = get_experiment(name)
    if name == "mitigations":  # only the three papers have real-model settings
        exp.model = "smollm2-135m"
        with pytest.raises(Exception, match="ships no real-model settings"):
            exp.configs(tmp_path)
        return
    exp.model = "path/to/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert exp.label == "SmolLM2-135M-Instruct.Q4_1"
    out = exp.out_dir(tmp_path)
    assert out == tmp_path / exp.label
    cfgs = exp.configs(out)
    assert cfgs and all(c.model == exp.model for c in cfgs.values())
    assert all(Path(c.run_dir).parent == out for c in cfgs.values())
    assert exp.section() == f"experiment:{name}@{exp.label}"
    assert exp.figure(Path("docs/REPLICATION.md"), "x") == Path(f"docs/img/x-{exp.label}.png")
    exp.model = None  # the built-in runs keep their section, folder and figure names
    assert exp.section() == f"experiment:{name}" and exp.out_dir(tmp_path) == tmp_path


def test_reproduce_help_names_model():
    from typer.testing import CliRunner

    from finemem.cli import app

    r = CliRunner().invoke(app, ["reproduce", "--help"])
    assert "--model" in r.output


def test_demo_and_over_memorization_configs(tmp_path):
    from finemem.experiments.demo import demo_config

    cfg = demo_config(tmp_path / "demo")
    assert cfg.data.train.source == "builtin:arith"
    assert cfg.audit.section("overmem").embedding_dispersion is False
    exp = get_experiment("over-memorization")
    runs = exp.configs(tmp_path)
    roles = exp.plan()["roles"]
    high, low = runs[roles["high_lr"]], runs[roles["low_lr"]]
    assert runs[roles["mar"]].training.loss == "mar"
    assert runs[roles["lora"]].training.method == "lora"
    assert low.training.lr < high.training.lr
    assert roles["merge"] in runs
    # the high-LR run is the demo run (same training digest) with more eval sets
    assert high.digest() == cfg.digest()
    assert {"test_distractor", "test_renamed", "test_reworded"} <= set(high.data.eval)
    assert all(c.audit.section("overmem").embedding_dispersion for c in runs.values())


def test_roles_must_name_runs(monkeypatch):
    from finemem.experiments.over_memorization import OverMemorization

    exp = OverMemorization()
    plan = exp.settings()
    monkeypatch.setattr(OverMemorization, "settings",
                        lambda self: {**plan, "roles": {**plan["roles"], "lora": "nope"}})
    with pytest.raises(UserError, match="roles.lora"):
        exp.plan()
    monkeypatch.setattr(OverMemorization, "settings",
                        lambda self: {**plan, "roles": {"low_lr": "full-low"}})
    with pytest.raises(UserError, match="high_lr"):
        exp.plan()


def test_errors_name_the_users_settings_file(tmp_path):
    """Under `--settings FILE` every experiment's errors name FILE, not the shipped YAML."""
    import yaml

    from finemem.experiments import get_experiment

    shipped = get_experiment("over-memorization").settings()
    mine = tmp_path / "mine.yaml"
    for name, settings, field in [
            ("over-memorization", {**shipped, "roles": {"low_lr": "full-low"}}, "roles.high_lr"),
            ("lora-vs-full", {"runs": {"a": {}}}, "run"),
            ("task-disparity", {"tasks": ["qa"], "high": ["qa"]}, "low")]:
        mine.write_text(yaml.safe_dump(settings))
        exp = get_experiment(name)
        exp.settings_path = mine
        with pytest.raises(UserError) as e:
            exp.plan()
        assert str(mine) in str(e.value) and f"field '{field}'" in str(e.value), str(e.value)


# -- sweep grid -------------------------------------------------------------------------------

def test_grid_values_are_yaml_scalars():
    from finemem.experiments.sweep import parse_grid

    g = parse_grid(["training.lr=1e-4,3.0e-4", "training.method=full,lora",
                    "data.train.options.events=[2, 2],[3, 3]", "training.max_steps=null,5",
                    "training.mar_detach=true,false"])
    assert g["training.lr"] == [1e-4, 3e-4] and all(isinstance(v, float) for v in g["training.lr"])
    assert g["training.method"] == ["full", "lora"]
    assert g["data.train.options.events"] == [[2, 2], [3, 3]]
    assert g["training.max_steps"] == [None, 5]
    assert g["training.mar_detach"] == [True, False]
    assert list(g) == ["training.lr", "training.method", "data.train.options.events",
                       "training.max_steps", "training.mar_detach"]


@pytest.mark.parametrize("specs,msg", [
    (["training.lr"], "KEY=V1,V2"), (["=1,2"], "KEY=V1,V2"), (["training.lr="], "KEY=V1,V2"),
    (["training.lr=1e-4", "training.lr=1e-3"], "gridded twice"),
    (["training.lr=1e-4,0.0001"], "repeated value"), (["run_dir=a,b"], "run_dir"),
])
def test_bad_grid_is_user_error(specs, msg):
    from finemem.experiments.sweep import parse_grid

    with pytest.raises(UserError, match=msg):
        parse_grid(specs)


def test_cell_names_are_safe_unique_and_ordered():
    from finemem.experiments.sweep import cell_names

    cells = cell_names({"training.method": ["full", "lora"], "training.lr": [1e-4, 1.2e-3]})
    assert [n for n, _ in cells] == ["method-full_lr-0.0001", "method-full_lr-0.0012",
                                     "method-lora_lr-0.0001", "method-lora_lr-0.0012"]
    assert cells[1][1] == {"training.method": "full", "training.lr": 1.2e-3}
    # same last key part: the whole key names it; odd characters are replaced
    cells = cell_names({"data.train.n": [10], "data.eval.test.n": [5],
                        "data.train.options.events": [[2, 2]], "model": ["org/model name"]})
    (name, _), = cells
    assert name == "data.train.n-10_data.eval.test.n-5_events-2-2_model-org-model-name"
    assert all(c.isalnum() or c in ".+_-" for c in name)
    # values that differ only in unsafe characters still get distinct folders
    names = [n for n, _ in cell_names({"model": ["a/b", "a:b"]})]
    assert len(set(names)) == 2


def test_sweep_checks_every_cell_before_training(tmp_path):
    from finemem.experiments.sweep import parse_grid, sweep_configs

    cfg = tmp_path / "run.yaml"
    cfg.write_text("run_dir: x\nmodel: builtin:test\ndata:\n  train: {source: builtin:arith}\n")
    cells = sweep_configs(cfg, parse_grid(["training.lr=1e-4,1e-3"]), tmp_path / "sw", epochs=2)
    assert [c.training.lr for _, _, c in cells] == [1e-4, 1e-3]
    assert cells[0][2].run_dir == str(tmp_path / "sw" / "lr-0.0001")
    assert all(c.training.epochs == 2 for _, _, c in cells)
    with pytest.raises(UserError, match="training.method"):
        sweep_configs(cfg, parse_grid(["training.method=full,fulll"]), tmp_path / "sw")


def _cell(values, *, graded=True, acc=0.9, onset=None, ppl=2.0):
    from finemem.experiments.sweep import Cell

    return Cell(values, "c", "r", graded, acc if graded else None, 3.0, ppl, onset, 1.4,
                "step-3", acc if graded else None, ppl)


def test_advice_prefers_accuracy_then_later_onset():
    from finemem.experiments.sweep import advice

    a = _cell({"training.lr": 1e-3}, acc=0.901, onset=4.0)
    b = _cell({"training.lr": 1e-4}, acc=0.899, onset=None)
    c = _cell({"training.lr": 3e-4}, acc=0.80)
    text = advice([a, b, c])
    assert text.startswith("Learning-rate recommendation: lr=0.0001")
    assert "never enters over-memorization" in text
    ungraded = advice([_cell({"data.train.n": 10}, graded=False, ppl=3.0),
                       _cell({"data.train.n": 20}, graded=False, ppl=2.5)])
    assert ungraded.startswith("Sweep recommendation: n=20") and "test PPL 2.500" in ungraded


def test_sweep_table_shows_ppl_for_ungraded():
    from rich.console import Console

    from finemem.experiments.sweep import sweep_table

    grid = {"training.lr": [1e-4]}
    con = Console(width=200, record=True)
    con.print(sweep_table([_cell({"training.lr": 1e-4}, graded=False)], grid))
    out = con.export_text()
    assert "min test PPL" in out and "its test PPL" in out and "best acc" not in out
    con = Console(width=200, record=True)
    con.print(sweep_table([_cell({"training.lr": 1e-4}, onset=7.0)], grid))
    out = con.export_text()
    assert "best acc" in out and "over-memorized from epoch" in out and " 7 " in out


# -- replication report -----------------------------------------------------------------------

def _row(name, epoch, **metrics):
    """A summary Row; metrics are key -> (value, lo, hi) or key -> [(value, lo, hi, settings)]."""
    store = {}
    for key, v in metrics.items():
        for value, lo, hi, *settings in (v if isinstance(v, list) else [v]):
            store.setdefault(key, []).append({"value": value, "lo": lo, "hi": hi, "n": 100,
                                              "settings": settings[0] if settings else {}})
    return Row(name, int(epoch), float(epoch), store)


def test_verdicts():
    from finemem.experiments.over_memorization_claims import verdict

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
    none_ci = _row("e", 5, **{"x/accuracy": (0.5, None, None)})
    assert verdict(rec, none_ci, "x/accuracy", expect="lower").startswith("direction only, no")


def test_verdict_matches_settings():
    from finemem.experiments.over_memorization_claims import verdict

    key = "test/distinct_fraction"
    a = _row("a", 1, **{key: [(0.9, 0.88, 0.92, {"k": 8, "first_line": False}),
                              (0.99, 0.97, 1.0, {"k": 8, "first_line": True})]})
    b = _row("b", 9, **{key: [(0.9, 0.88, 0.92, {"k": 8, "first_line": False}),
                              (0.7, 0.6, 0.8, {"k": 8, "first_line": True})]})
    assert verdict(a, b, key, expect="lower", k=8, first_line=True).startswith("held")
    assert verdict(a, b, key, expect="lower", k=8, first_line=False).startswith("did not hold")
    assert verdict(a, b, key, expect="lower", k=4) == "not measured"


def test_claim_directions_come_from_the_registry(monkeypatch):
    from finemem.experiments import over_memorization_claims as oc
    from finemem.metrics import get_metric, registry

    assert oc.expected("answer_accuracy", "worse") == "lower"
    assert oc.expected("expected_calibration_error", "worse") == "higher"
    assert oc.expected("perplexity", "better") == "lower"
    assert oc.expected("distinct_fraction", "more memorized") == "lower"
    assert oc.expected("self_bleu", "more memorized") == "higher"
    with pytest.raises(ValueError):
        oc.expected("answer_accuracy", "more memorized")  # says nothing about memorization
    # flip a metric's registered direction: the verdict follows the registry, not this module
    rec = _row("a", 1, **{"test/expected_calibration_error": (0.05, 0.04, 0.06)})
    om = _row("b", 9, **{"test/expected_calibration_error": (0.20, 0.15, 0.25)})
    m = oc.Measure("test/expected_calibration_error", "ECE")
    assert oc.claim_verdict(rec, om, m, "worse").startswith("held")
    get_metric("expected_calibration_error")
    monkeypatch.setitem(registry.METRICS, "expected_calibration_error",
                        SimpleNamespace(higher_is_better=True, more_memorized_when=None))
    assert oc.claim_verdict(rec, om, m, "worse").startswith("did not hold")


def test_claim_metrics_are_registered():
    """Every metric a claim or comparison names is in the registry (with the directions the
    claims need)."""
    from finemem.experiments import over_memorization_claims as oc

    rec = _row("a", 1, **{"test_distractor/answer_accuracy": (0.9, 0.8, 0.95)})
    for claim, m, change in oc.checkpoint_claims(rec, None, 8):
        assert oc.expected(m.metric, change) in ("higher", "lower")
    for m in oc.compared(8):
        oc.expected(m.metric, "worse")


def _summary(rows, labels, ratios, *, k=8, delta=0.05, tau=0.3, merges=()):
    from finemem.audit.summary import RunSummary

    labs = [SimpleNamespace(label=lab, ppl_ratio=r) for lab, r in zip(labels, ratios)]
    audit = SimpleNamespace(section=lambda name: SimpleNamespace(k_samples=k))
    return RunSummary(Path("r"), rows, labs, SimpleNamespace(name=rows[1].name, explanation=""),
                      SimpleNamespace(delta=delta, tau=tau), audit, merges=list(merges))


def test_claims_read_roles_not_run_names():
    from finemem.experiments import over_memorization_claims as oc

    acc = "test/answer_accuracy"
    def traj(accs):
        return [_row(f"s{i}", i, **{acc: (a, a - 0.03, min(a + 0.03, 1.0)),
                                    "test/perplexity": (2.0, 1.9, 2.1)})
                for i, a in enumerate(accs)]
    hi = _summary(traj([0.0, 0.95, 0.95, 0.94]), ["underfit", "healthy", "over-memorized",
                                                    "over-memorized"], [1.0, 1.0, 1.4, 1.5])
    lo = _summary(traj([0.0, 0.95, 0.96, 0.96]), ["underfit", "healthy", "healthy",
                                                    "over-memorized"], [1.0, 1.0, 1.1, 1.35])
    roles = {"high_lr": "alpha", "low_lr": "beta"}
    lines = oc.claims({"alpha": hi, "beta": lo}, roles, hi.rows[1], hi.rows[3])
    text = "\n".join(lines)
    assert "2 checkpoint(s) of alpha labelled over-memorized" in text
    assert "longest such run: 2 checkpoint(s)" in text
    assert "onset epoch high 2, low 3" in text and "| held |" in lines[2]
    assert "LoRA" not in text  # no lora role: no claim
    assert oc.mitigation_claims(None, None, hi.rows[-1], None) == [
        "| Merging two checkpoints lowers test PPL vs the final one | test PPL | not run |",
        "| MAR loss lowers test PPL vs plain CE at the same epoch | test PPL | not run |"]


def test_demo_signature_needs_consecutive_checkpoints():
    from finemem.analysis.stages import longest_stretch
    from finemem.experiments.demo import signature

    accs = [0.0, 0.95, 0.96, 0.95, 0.94, 0.80]
    ratios = [1.0, 1.0, 1.1, 1.35, 1.5, 1.9]
    rows = [_row(f"s{i}", i, **{"test/answer_accuracy": (a, a, a)}) for i, a in enumerate(accs)]
    s = _summary(rows, ["healthy"] * 6, ratios)
    assert [r.name for r in signature(s)] == ["s3", "s4"]  # s5 fell 16 points: not counted
    assert signature(s, ratio=2.0) == []
    assert longest_stretch(accs, ratios) == [3, 4]
    # the first of two equally long runs wins; NaN accuracy never counts
    assert longest_stretch([0.9, 0.9, 0.5, 0.9, math.nan], [1.5, 1.0, 2.0, 1.5, 1.5]) == [0]
    with pytest.raises(UserError):
        longest_stretch([0.9], [1.0, 1.0])


def test_replication_markdown_comes_from_its_template(tmp_path):
    """write_replication renders templates/over_memorization.md.j2: the title, the machine
    note as the second paragraph, one table row per run and the claims table."""
    from finemem.experiments import MACHINE_NOTE
    from finemem.experiments import over_memorization_claims as oc

    acc = "test/answer_accuracy"
    rows = [_row(f"s{i}", i, **{acc: (a, a - 0.03, min(a + 0.03, 1.0)),
                                "test/perplexity": (2.0 + i, 1.9, 2.1 + i)})
            for i, a in enumerate([0.0, 0.95, 0.95, 0.94])]
    hi = _summary(rows, ["underfit", "healthy", "over-memorized", "over-memorized"],
                  [1.0, 1.0, 1.4, 1.5])
    cfg = SimpleNamespace(model="builtin:tiny", data=SimpleNamespace(train=SimpleNamespace(
        source="builtin:arith", n=500, options={})), training=SimpleNamespace(
        epochs=30, scheduler="linear", warmup_steps=30, method="full", lr=6e-4, loss="ce"))
    doc = tmp_path / "REPLICATION.md"
    oc.write_replication(doc, {"alpha": hi}, {"alpha": cfg}, {"high_lr": "alpha"}, minutes=3)
    text = doc.read_text()
    paras = text.split("\n\n")
    assert "# Replication: over-memorization on the built-in setup" in paras[0]
    assert MACHINE_NOTE in text and text.index(MACHINE_NOTE) > text.index("this invocation took 3 min")
    assert "| alpha | full | 0.0006 | ce | 0.950 |" in text
    assert "### alpha: full fine-tuning, high learning rate" in text
    assert "| claim (paper) | measured here | verdict |" in text
