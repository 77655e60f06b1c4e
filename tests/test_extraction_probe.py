"""End to end: `finemem audit RUN --probes extraction,attention` on a `builtin:test` run, the
stored rows it promises (per-example scores, ratios with intervals, length bins, excess,
controls, attention correlations), resume, and its bad inputs (one line, exit 2)."""

import json
import shutil

import pytest
import yaml
from typer.testing import CliRunner

from finemem.cli import app

pytestmark = pytest.mark.integration
runner = CliRunner()
SETS = ["--set", "audit.extraction.prefix_tokens=8", "--set", "audit.extraction.suffix_tokens=16",
        "--set", "audit.extraction.members=24", "--set", "audit.extraction.nonmembers=24",
        "--set", "audit.extraction.length_bins=[40,60]", "--set", "audit.extraction.samples=2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    cfg = {"run_dir": str(root / "run"), "model": "builtin:test",
           "data": {"train": {"source": "builtin:qa", "split": "train", "n": 24},
                    "eval": {"test": {"source": "builtin:qa", "split": "test", "n": 24}},
                    "loss_on": "all"},
           "training": {"epochs": 2, "lr": 3e-3, "batch_size": 8, "save_every": "epoch"}}
    (root / "run.yaml").write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["train", "--config", str(root / "run.yaml")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["audit", str(root / "run"), "--probes", "extraction,attention", *SETS])
    assert r.exit_code == 0, r.output
    assert "Extraction of" in r.output and "Controls:" in r.output
    return root / "run"


def _metrics(run_dir):
    from finemem.store import Store

    with Store(run_dir / "results.sqlite") as s:
        return s.metrics()


def test_store_has_ratios_intervals_bins_excess_and_controls(run):
    from finemem.analysis.extraction import extraction_rows

    rows = extraction_rows(run)
    assert [r.name for r in rows] == ["step-000000", "step-000003", "step-000006"]
    for r in rows:
        for split in ("members", "nonmembers"):
            for name in ("exact_greedy_extractable", "bleu", "rouge_l", "embedding_cosine",
                         "leading_match_length", "token_accuracy"):
                m = r.get(split, name)
                assert m["n"] == 24 and m["lo"] <= m["value"] <= m["hi"], (split, name)
            for cat in ("verbatim", "idea", "paraphrase", "any"):
                m = r.get(split, "memorization_ratio", category=cat)
                assert m["n"] == 24 and 0 <= m["lo"] <= m["value"] <= m["hi"] <= 1
                assert r.get(split, "memorization_ratio", category=cat, source="any")
        s = r.get("members", "sampled_extraction_rate", samples=2, temperature=1.0, top_p=1.0)
        assert s["n"] == 24 and s["lo"] <= s["value"] <= s["hi"]
        e = r.get("excess", "excess_over_nonmembers", outcome="verbatim")
        assert e["n"] == 48 and e["lo"] <= e["value"] <= e["hi"]
        # Every score separates the perfect control (true suffix) from the null control
        # (another member's suffix).
        for name in ("bleu", "rouge_l", "embedding_cosine", "exact_greedy_extractable"):
            assert r.get("control_perfect", name)["value"] > r.get("control_null", name)["value"]
        assert r.get("control_perfect", "memorization_ratio", category="verbatim")["value"] == 1
    # Length bins: every member falls in one, so bin sizes add up to n.
    bins = [m for m in _metrics(run) if m["checkpoint"] == "step-000006"
            and m["split"] == "members" and m["name"] == "exact_greedy_extractable"
            and "length_bin" in m["setting"]]
    assert bins and sum(m["n"] for m in bins) == 24


def test_per_example_rows_and_attention(run):
    from finemem.engine import load_run_checkpoints
    from finemem.store import Store

    last = load_run_checkpoints(run)[-1]
    with Store(run / "results.sqlite") as s:
        for what in ("rouge_l", "bleu", "embedding_cosine", "category", "generation",
                     "true_suffix", "length", "attention"):
            if what == "attention":
                rows = s.get_examples(last.content_hash, "members/attention", "value")
            else:
                rows = s.get_examples(last.content_hash, f"members/{what}", "value")
            assert len(rows) == 24, what
        att = json.loads(next(iter(s.get_examples(last.content_hash, "members/attention",
                                                  "value").values())))
    import numpy as np

    att = np.array(att)  # (layers, heads, 3)
    assert att.ndim == 3 and att.shape[2] == 3 and np.all((att >= -1e-6) & (att <= 1 + 1e-6))
    rho = [m for m in _metrics(run) if m["name"] == "spearman_rho"
           and m["checkpoint"] == last.name]
    assert len(rho) == 3 * att.shape[0] * att.shape[1]
    for m in rho:
        assert m["n"] == 24
        if m["value"] == m["value"]:  # nan when a head's statistic is constant
            assert -1 <= m["lo"] <= m["value"] <= m["hi"] <= 1


def test_rerun_computes_nothing_new(run):
    before = _metrics(run)
    r = runner.invoke(app, ["audit", str(run), "--probes", "extraction,attention", *SETS])
    assert r.exit_code == 0, r.output
    assert _metrics(run) == before


def _cli(argv, capsys, monkeypatch):
    """Run `finemem ARGV` through the real entry point: (exit status, stderr)."""
    import sys

    from finemem.cli import main

    monkeypatch.setattr(sys, "argv", ["finemem", *argv])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code, capsys.readouterr().err


def _one_line_error(res, *needles):
    code, err = res
    assert code == 2, err
    text = err.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    for n in needles:
        assert n in text, text


def test_bad_inputs(run, tmp_path, capsys, monkeypatch):
    before = _metrics(run)
    cli = lambda *argv: _cli(argv, capsys, monkeypatch)  # noqa: E731
    _one_line_error(cli("audit", str(run), "--probes", "extraction",
                        "--set", "audit.extraction.prefix_tokens=500"), "prefix_tokens")
    _one_line_error(cli("audit", str(run), "--probes", "extractoin"), "extraction")          # "did you mean" and the known probes
    # Non-members that are training examples: refused with their ids.
    from finemem.config import load_config
    from finemem.data.loaders import load_examples

    train = load_examples(load_config(run / "config.yaml").data.train)
    nm = tmp_path / "nonmembers.jsonl"
    nm.write_text("".join(json.dumps({"id": f"x{i}", "prompt": e.prompt,
                                      "completion": e.completion}) + "\n"
                          for i, e in enumerate(train[:3])))
    _one_line_error(cli("audit", str(run), "--probes", "extraction",
                        "--set", f"audit.nonmembers.source={nm}"), "x0", "non-members")
    assert _metrics(run) == before
    # A run folder without a manifest.
    bare = tmp_path / "bare"
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("checkpoints", "results.sqlite*"))
    (bare / "manifest.jsonl").unlink()
    _one_line_error(cli("audit", str(bare), "--probes", "extraction"), "manifest")


def test_report_has_the_extraction_section(run):
    r = runner.invoke(app, ["report", str(run)])
    assert r.exit_code == 0, r.output
    html = (run / "report" / "index.html").read_text()
    assert "<h2" in html and "Extraction" in html
    assert "extraction ratios over training" in html                  # the curve
    assert "attention entropy correlation per layer and head" in html  # the heatmap
    assert "true suffix" in html                                       # generations shown
