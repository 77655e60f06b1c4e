"""`finemem reproduce task-disparity` end to end on users' own files (a settings file naming
local JSONL per task, the `test` model), the section it writes into a shared document, and
the group contrast on hand-made outcomes."""

import json

import numpy as np
import pytest
import yaml

from finemem.analysis.extraction import group_contrast

pytestmark = pytest.mark.integration


def test_group_contrast_by_hand():
    ones, zeros = np.ones(40), np.zeros(40)
    g = {"high": [{"members": ones, "nonmembers": zeros}],
         "low": [{"members": zeros, "nonmembers": zeros}, {"members": zeros, "nonmembers": zeros}]}
    d, lo, hi = group_contrast(g)
    assert d == lo == hi == 1.0
    half = np.array([1.0, 0.0] * 20)
    d, lo, hi = group_contrast({"high": [{"members": half, "nonmembers": zeros}],
                                "low": [{"members": half, "nonmembers": zeros}]})
    assert d == 0 and lo < 0 < hi


def test_reproduce_on_local_files_writes_its_own_section(tmp_path, capsys, monkeypatch):
    import sys

    import torch

    from finemem.cli import main
    from finemem.data.tasks import get_task

    torch.set_num_threads(1)
    for task in ("qa", "translate"):
        for split, n in (("train", 16), ("test", 16)):
            rows = [{"id": f"{task}-{split}-{i}", "prompt": e.prompt, "completion": e.completion}
                    for i, e in enumerate(get_task(task).generate(split, n))]
            (tmp_path / f"{task}_{split}.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in rows))
    settings = {
        "tasks": ["qa", "translate"], "high": ["qa"], "low": ["translate"],
        "run": {"model": "builtin:test",
                "data": {"train": {"source": str(tmp_path / "{task}_train.jsonl")},
                         "eval": {"test": {"source": str(tmp_path / "{task}_test.jsonl")}},
                         "loss_on": "all", "max_length": 96},
                "training": {"epochs": 2, "lr": 3e-3, "batch_size": 8, "save_every": "epoch"},
                "audit": {"extraction": {"members": 16, "nonmembers": 16, "prefix_tokens": 8,
                                         "suffix_tokens": 12, "length_bins": [48]}}}}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(settings))
    doc = tmp_path / "REPLICATION.md"
    doc.write_text("<!-- experiment:over-memorization -->\nkept as it is\n"
                   "<!-- /experiment:over-memorization -->\n")
    monkeypatch.setattr(sys, "argv", ["finemem", "reproduce", "task-disparity", "--out",
                                      str(tmp_path / "runs"), "--doc", str(doc),
                                      "--settings", str(tmp_path / "mine.yaml")])
    try:
        main()
    except SystemExit as e:
        assert e.code in (0, None), capsys.readouterr().err
    text = doc.read_text()
    assert "kept as it is" in text                      # the other section is left alone
    assert "<!-- experiment:task-disparity -->" in text
    assert "| qa | 16 |" in text and "| translate |" in text
    assert "Overall, verbatim:" in text and "Within length bin" in text
    from finemem.experiments import MACHINE_NOTE
    assert MACHINE_NOTE in text                          # figures are this machine's
    assert (tmp_path / "img" / "task_disparity.png").stat().st_size > 1000
    # A rerun resumes: nothing is trained or audited again, the section is the same.
    before = {p: p.stat().st_mtime for p in (tmp_path / "runs").rglob("*.safetensors")}
    try:
        main()
    except SystemExit as e:
        assert e.code in (0, None)
    assert {p: p.stat().st_mtime for p in (tmp_path / "runs").rglob("*.safetensors")} == before
