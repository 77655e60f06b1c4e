"""Each probe shows itself: `finemem audit RUN --probes X` prints X's headline table, and the
HTML report has X's section (one small run audited with every probe, on the `test` model)."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from finemem.cli import app

pytestmark = pytest.mark.integration
runner = CliRunner()

# probe -> (a line of its terminal headline, its report section); likelihood is audited first,
# alone, so that its own headline (the stage table's PPL columns) is what is checked. The
# secrets probe needs data with secrets in it: tests/test_secrets.py checks its headline
# ("Secrets extracted per type") and its report section on a builtin:records run.
HEADLINES = {
    "likelihood": ("Stages of", "overmem"),
    "overmem": ("Recommendation:", "overmem"),
    "membership": ("Membership inference per checkpoint", "membership"),
    "canaries": ("exposure (bits)", "canaries"),
    "relaxed": ("Relaxed memorization against threshold", "relaxed"),
    "attention": ("Attention against memorization", "attention"),
    "extraction": ("Extraction of", "extraction"),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared small machine: one thread is faster for this model
    try:
        root = tmp_path_factory.mktemp("views")
        cfg = {"run_dir": str(root / "run"), "model": "builtin:test",
               "data": {"train": {"source": "builtin:arith", "split": "train", "n": 24},
                        "eval": {"test": {"source": "builtin:arith", "split": "test",
                                          "n": 40}}},
               "training": {"epochs": 2, "lr": 3e-3, "batch_size": 16},
               "audit": {"likelihood": {"train_sample": 8},
                         "overmem": {"max_new_tokens": 16, "diversity_prompts": 4,
                                     "k_samples": 2, "embedding_dispersion": False},
                         "membership": {"members": 24, "nonmembers": 40, "n_boot": 100},
                         "extraction": {"members": 24, "nonmembers": 40, "prefix_tokens": 12,
                                        "suffix_tokens": 12},
                         "canaries": {"n_boot": 100}}}
        path = root / "run.yaml"
        path.write_text(yaml.safe_dump(cfg))
        r = runner.invoke(app, ["canaries", "add", str(path), "--families", "random",
                                "--tiers", "1,16", "--per-tier", "4", "--twins", "20"])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["train", "--config", str(path), "--no-progress"])
        assert r.exit_code == 0, r.output
        outs = {}
        for probe in HEADLINES:
            r = runner.invoke(app, ["audit", str(root / "run"), "--probes", probe])
            assert r.exit_code == 0, r.output
            outs[probe] = r.output
        return root / "run", outs
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("probe", sorted(HEADLINES))
def test_audit_prints_the_probes_headline(run, probe):
    line, _ = HEADLINES[probe]
    assert line in run[1][probe], run[1][probe][-2000:]


def test_membership_prints_its_table_not_the_stage_table(run):
    out = run[1]["membership"]
    assert "AUC [95% CI]" in out and "TPR @ 0.01 FPR" not in out  # 40 non-members: refused
    assert "Recommendation:" not in out


@pytest.fixture(scope="module")
def page(run):
    from finemem.report.html import render_report

    return render_report([run[0]])


@pytest.mark.parametrize("probe", sorted(HEADLINES))
def test_report_has_the_probes_section(page, probe):
    assert f'data-section="{HEADLINES[probe][1]}"' in page


def test_membership_section_draws_roc_at_recommended_and_last(run, page):
    """The ROC figure is drawn from the stored per-example scores at the recommended and the
    last checkpoint, and each curve's area is the AUC the probe stored."""
    from types import SimpleNamespace

    import numpy as np

    from finemem.report.sections import membership as section
    from finemem.report.sections._common import RunData

    data = RunData.open(run[0])
    try:
        rec = data.summary.recommendation.name
        last = [c.name for c in data.checkpoints if c.kind not in ("base", "merge")][-1]
        shown = section.roc_checkpoints(data)
        assert {c for c, _ in shown} == {rec, last}
        for ck, _ in shown:
            curves = section.roc_curves(data, ck)
            assert curves
            stored = {r["settings"]["attack"]: r["value"] for r in
                      data.metric_rows(split="membership", name="membership_auc",
                                       checkpoint=ck)}
            for attack, (f, t, n_m, n_n) in curves.items():
                assert (n_m, n_n) == (24, 40)
                assert np.trapezoid(t, f) == pytest.approx(stored[attack], abs=1e-9)
        # a recommendation before the last checkpoint: one panel each
        first = [c.name for c in data.checkpoints if c.kind not in ("base", "merge")][0]
        assert first != last
        data.summary = SimpleNamespace(recommendation=SimpleNamespace(name=first))
        assert section.roc_checkpoints(data) == [(first, "recommended"), (last, "last")]
        assert section._roc_plot(data)["alt"] == f"{first} (recommended), {last} (last)"
    finally:
        data.close()
    assert 'data-plot="membership-roc"' in page
    alt = page.split('data-plot="membership-roc" alt="', 1)[1].split('"', 1)[0]
    assert f"{rec} (recommended" in alt and f"{last} (" in alt and "last)" in alt
