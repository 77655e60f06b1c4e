"""The HTML report: rendered from a `builtin:test` run whose data carries a planted
`<script>`, then opened in headless Chromium: no script errors, every plot loaded, the planted
script shown as text and never run. Plus the section registry and the comparison page."""

import json
import os
import re
import shutil
import subprocess
import warnings

import pytest
import yaml
from typer.testing import CliRunner

from finemem.cli import app

pytestmark = pytest.mark.integration
runner = CliRunner()
PLANT = "<script>document.title='pwned'</script>"


def _jsonl(path, examples, plant_every: int = 0):
    with open(path, "w", encoding="utf-8") as fh:
        for i, e in enumerate(examples):
            prompt = e.prompt
            if plant_every and i % plant_every == 0:
                prompt = PLANT + " " + prompt
            fh.write(json.dumps({"id": f"{path.stem}-{i}", "prompt": prompt,
                                 "completion": e.completion, "answer": e.answer}) + "\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from finemem.config import DataSource
    from finemem.data.loaders import load_examples

    root = tmp_path_factory.mktemp("report")
    _jsonl(root / "train.jsonl", load_examples(DataSource(source="builtin:arith", n=12)), 1)
    _jsonl(root / "test.jsonl", load_examples(DataSource(source="builtin:arith", split="test",
                                                         n=6)), 3)
    cfg = {"run_dir": str(root / "run"), "model": "builtin:test",
           "data": {"train": {"source": str(root / "train.jsonl")},
                    "eval": {"test": {"source": str(root / "test.jsonl")}}},
           "training": {"epochs": 2, "lr": 2e-3, "batch_size": 6},
           "audit": {"likelihood": {"train_sample": 6},
                     "overmem": {"diversity_prompts": 2, "k_samples": 2, "max_new_tokens": 8,
                                 "embedding_dispersion": False}}}
    (root / "run.yaml").write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["train", "--config", str(root / "run.yaml"), "--no-progress"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["audit", str(root / "run"), "--quiet"])
    assert r.exit_code == 0, r.output
    return root / "run"


@pytest.fixture(scope="module")
def page(run):
    r = runner.invoke(app, ["report", str(run)])
    assert r.exit_code == 0, r.output
    path = run / "report" / "index.html"
    assert f"report: {path}" in r.output
    return path


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_report_escapes_data_and_is_self_contained(page):
    html = page.read_text("utf-8")
    assert PLANT not in html                              # never raw
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in html
    assert re.search(r"<(img|script|link)[^>]+(src|href)=\"(https?:)?//", html) is None
    assert html.count("<script") == 1                     # the page's own recorder only
    assert 'data-plot="dynamics"' in html and "data:image/png;base64," in html
    for section in ("overview", "overmem", "examples", "metrics"):
        assert f'data-section="{section}"' in html


def test_report_in_headless_chromium(page):
    exe = _browser()
    if exe is None:
        reason = ("no Chromium found (bash .ci/run installs it with apt-get install -y "
                  "chromium); the browser test did not run")
        warnings.warn(reason)  # shown in the warnings summary even without -rs
        pytest.skip(reason)
    proc = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu",
                           "--enable-logging=stderr", "--v=0", "--dump-dom",
                           page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(page.parent)})
    dom = proc.stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-ready="1"' in body, body                 # the page's own script ran
    assert 'data-errors="[]"' in body, body               # ... and saw no error
    shown, loaded = re.search(r'data-plots="(\d+)/(\d+)"', body).groups()
    assert int(shown) >= 2 and shown == loaded            # every plot decoded and shown
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln]
    assert not [ln for ln in console if re.search(r"Uncaught|Refused|Error", ln)], console
    title = re.search(r"<title>(.*?)</title>", dom).group(1)
    assert title == "finemem report: run"                 # the planted script did not run
    assert "pwned" not in title
    assert "&lt;script&gt;document.title" in dom          # it shows as text


def test_new_section_and_stored_metric_show_up(run, tmp_path):
    from finemem.report.html import render_report
    from finemem.report.sections import SECTIONS, register_section
    from finemem.store import Store

    with Store(run / "results.sqlite") as store:  # a probe without a section of its own yet
        store.put_metric("step-000002", "train", "exact_greedy_extractable", 0.25, n=8,
                         lo=0.07, hi=0.59, setting='{"prefix": 4}')

    @register_section("probe_x", title="Probe X", order=55,
                      template="<p class='x'>{{ text }}</p>{{ pair(p) }}")
    def _probe_x(data):
        from finemem.report.sections import matched_pair

        return {"text": "<b>data</b>", "p": matched_pair("<i>", "a b <c>", "a <c> d")}

    try:
        html = render_report([run])
    finally:
        del SECTIONS["probe_x"]
    assert "<p class='x'>&lt;b&gt;data&lt;/b&gt;</p>" in html
    assert "<mark>&lt;c&gt;</mark>" in html and "<mark>a </mark>b " in html
    assert "exact_greedy_extractable" in html and "0.250 [0.070, 0.590] n=8" in html


def test_compare_page(run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("checkpoints", "state"))
    r = runner.invoke(app, ["report", str(run), str(other), "--out", "report/c.html",
                            "--json"])
    assert r.exit_code == 0, r.output
    page = run.resolve() / "report" / "c.html"      # --out is inside the first run folder
    assert json.loads(r.output)["report"] == str(page)
    html = page.read_text("utf-8")
    assert 'data-section="compare"' in html and 'data-plot="compare"' in html
    assert (other / "report" / "index.html").is_file()


def test_report_errors_are_one_line(tmp_path):
    r = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert r.exit_code != 0


def test_dynamics_ppl_log_axis_base_apart():
    import matplotlib.pyplot as plt

    from finemem.audit.summary import Row
    from finemem.report.plots import _ppl_axis

    def row(step, ppl):
        return Row(f"step-{step:06d}", step, float(step),
                   {"test/perplexity": [{"value": ppl, "settings": {}}]})

    fig, ax = plt.subplots()
    _ppl_axis(ax, [row(0, 1750.0), row(1, 5.4), row(2, 2.0), row(3, 1.2)], "test/perplexity",
              "s--", "r", "test PPL")
    lo, hi = ax.get_ylim()
    assert ax.get_yscale() == "log" and hi < 20 and lo < 1.2      # scaled to the fine-tuned
    assert any("1750" in t.get_text() for t in ax.texts)          # base shown apart, labelled
    plt.close(fig)


def test_membership_note_counts_the_rows_it_shows():
    # a run audited twice with other non-member counts keeps both audits' rows: the note
    # must count the shown (latest) rows, not quote the first audit's counts
    from finemem.report.sections.membership import membership_grid

    def row(ck, non, value):
        return {"checkpoint": ck, "split": "membership", "name": "membership_auc", "n": 64,
                "value": value, "lo": value - 0.1, "hi": value + 0.1,
                "settings": {"attack": "loss", "nonmembers": non}}

    class Run:
        rows = [row("base", 64, 0.52), row("step-1", 64, 0.87),
                row("base", 48, 0.53), row("step-1", 48, 0.89)]

        def metric_rows(self, split=None, name=None):
            return [r for r in self.rows if (split is None or r["split"] == split)
                    and (name is None or r["name"] == name)]

        def checkpoint_order(self):
            return ["base", "step-1"]

    g = membership_grid(Run())
    assert [r[2].split()[0] for r in g.rows] == ["0.530", "0.890"]   # the latest rows
    assert g.notes[0] == "64 members, 48 non-members."
    Run.rows = Run.rows[:3]                                          # step-1 audited once
    assert "64 members vs 48 non-members, 64 members vs 64 non-members" in \
        membership_grid(Run()).notes[0]
