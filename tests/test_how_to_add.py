"""docs/ARCHITECTURE.md "How to add": a task and an experiment added the way the doc says are
found by their registries and run through the CLI (the probe's and the attack's are in
tests/test_probes.py and tests/test_attacks.py). Each is registered in-process, one file's
worth of code, and unregistered afterwards."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from finemem.cli import app

runner = CliRunner()


def _count_up_task(name: str, *, in_base_corpus: bool):
    """The doc's task: a `Task` subclass registered with `@register_task(name)`."""
    from finemem.data.example import Example
    from finemem.data.tasks import Task, register_task

    offsets = {"train": 0, "test": 1, "ood": 2}  # disjoint splits: k = 3 i + offset

    class CountUp(Task):
        splits = ("train", "test", "ood")
        eval_splits = {"test": "test", "ood": "ood"}
        answer_extractor = None

        def generate(self, split, n, seed=0):
            self.check_split(split)
            out = []
            for i in range(n):  # the first k of n are the same for any n >= k
                k = 3 * (i + 1000 * seed) + offsets[split]
                out.append(Example(prompt=f"Count up from {k}:",
                                   completion=f" {k + 1} {k + 2} {k + 3}",
                                   id=f"{self.name}-{split}-{i}"))
            return out

        def pretrain_texts(self, n, seed=0):
            return [f"Counting: {k} {k + 1}" for k in range(10_000 + seed, 10_000 + seed + n)]

    CountUp.in_base_corpus = in_base_corpus
    return register_task(name)(CountUp)


def test_a_new_task_is_found_loaded_and_changes_the_base_key():
    from finemem.audit.evalsets import eval_sources
    from finemem.config import DataSource, parse_config
    from finemem.data.loaders import load_examples
    from finemem.data.tasks import TASKS, get_task, task_names
    from finemem.models.base import build_spec

    before = build_spec("test")["corpus"]["sample_sha"]
    _count_up_task("count_up_key", in_base_corpus=True)
    try:
        assert "count_up_key" in task_names()
        assert get_task("count_up_key").generate("train", 2)[1].prompt == "Count up from 3:"
        exs = load_examples(DataSource(source="builtin:count_up_key", split="test", n=3))
        assert [e.id for e in exs] == [f"count_up_key-test-{i}" for i in range(3)]
        assert exs[0].completion == " 2 3 4"
        cfg = parse_config({"run_dir": "unused", "model": "builtin:test",
                            "data": {"train": {"source": "builtin:count_up_key",
                                               "split": "train", "n": 8}}})
        roles = {name: role for name, (_, role, implicit) in eval_sources(cfg).items()
                 if implicit}
        assert roles == {"test": "test", "ood": "ood"}  # the task's own eval_splits
        # the doc: the base's cache key hashes every task's pretraining texts
        assert build_spec("test")["corpus"]["sample_sha"] != before
    finally:
        TASKS.pop("count_up_key", None)
    assert build_spec("test")["corpus"]["sample_sha"] == before


@pytest.mark.integration
def test_finemem_trains_and_audits_a_new_task(tmp_path):
    """`in_base_corpus = False` keeps the built bases: `finemem train` on the new task reuses
    the cached builtin:test base."""
    from finemem.data.tasks import TASKS
    from finemem.run import RunFolder

    _count_up_task("count_up", in_base_corpus=False)
    try:
        cfg = {"run_dir": str(tmp_path / "run"), "model": "builtin:test",
               "data": {"train": {"source": "builtin:count_up", "split": "train", "n": 8},
                        "eval": {"test": {"source": "builtin:count_up", "split": "test",
                                          "n": 8}}},
               "training": {"epochs": 1, "batch_size": 8}}
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump(cfg))
        r = runner.invoke(app, ["train", "--config", str(path), "--no-progress"])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["audit", str(tmp_path / "run"), "--probes", "likelihood",
                                "--no-progress"])
        assert r.exit_code == 0, r.output
        folder = RunFolder(tmp_path / "run")
        store = folder.open_store()
        try:
            ppl = store.metrics(split="test", name="perplexity")
        finally:
            store.close()
        assert len(ppl) == 2 and all(r.value > 1 and r.n == 8 for r in ppl)  # base + epoch 1
    finally:
        TASKS.pop("count_up", None)


def _tiny_experiment(name: str):
    """The doc's experiment: an `Experiment` subclass registered with
    `@register_experiment(name)`, training and auditing through the public entry points and
    writing its section of the report from stored metrics."""
    from pathlib import Path

    from finemem.experiments import Experiment, register_experiment

    class Tiny(Experiment):
        description = "one small run, audited for likelihood"
        settings_file = "tiny_check.yaml"  # beside the module when shipped; here --settings
        reproducible = True

        def configs(self, out: Path) -> dict:
            from finemem.config import parse_config

            raw = self.require(self.settings(), "run")["run"]
            return {"run": parse_config({**raw, "run_dir": str(Path(out) / "run")},
                                        source=self.settings_source)}

        def run(self, out: Path, *, doc: Path = Path("docs/REPLICATION.md"), **_) -> str:
            from finemem.audit import audit_run, summarize
            from finemem.io import write_doc_section
            from finemem.train import train

            cfg = self.configs(out)["run"]
            train(cfg, progress=False)
            audit_run(cfg.run_dir, probes=["likelihood"], progress=False)
            rows = summarize(cfg.run_dir).rows
            ppl = rows[-1].get("test/perplexity")
            md = f"{len(rows)} checkpoints; last test PPL {ppl:.2f}\n"
            write_doc_section(doc, f"experiment:{self.name}", md)
            return md

    return register_experiment(name)(Tiny)


@pytest.mark.integration
def test_finemem_reproduces_a_new_experiment(tmp_path):
    from finemem.experiments import EXPERIMENTS, experiment_names, get_experiment

    _tiny_experiment("tiny-check")
    try:
        assert "tiny-check" in experiment_names(reproducible=True)
        settings = {"run": {"model": "builtin:test",
                            "data": {"train": {"source": "builtin:arith", "split": "train",
                                               "n": 8},
                                     "eval": {"test": {"source": "builtin:arith",
                                                       "split": "test", "n": 8}}},
                            "training": {"epochs": 1, "batch_size": 8}}}
        path = tmp_path / "tiny.yaml"
        path.write_text(yaml.safe_dump(settings))
        exp = get_experiment("tiny-check")
        exp.settings_path = path  # what `finemem reproduce tiny-check --settings` sets
        assert list(exp.configs(tmp_path / "x")) == ["run"]  # validated, nothing trained
        doc = tmp_path / "REPLICATION.md"
        r = runner.invoke(app, ["reproduce", "tiny-check", "--out", str(tmp_path / "out"),
                                "--doc", str(doc), "--settings", str(path)])
        assert r.exit_code == 0, r.output
        text = doc.read_text()
        assert "<!-- experiment:tiny-check -->" in text and "2 checkpoints; last test PPL" in text
        assert (tmp_path / "out" / "run" / "results.sqlite").is_file()  # a normal run folder
    finally:
        EXPERIMENTS.pop("tiny-check", None)
