"""Deduplication (finemem/data/dedup.py): exact and near duplicates of a seeded duplicated set,
removed and recorded in the manifest."""

import dataclasses
import random

from finemem.config import Duplication
from finemem.data.dedup import dedup_examples, dedup_manifest, normalize
from finemem.data.duplication import apply_duplication
from finemem.data.example import Example


def _distinct(n):
    rng = random.Random(7)
    words = "alpha beta gamma delta kappa sigma omega theta lambda zeta rho tau".split()
    return [Example(prompt=f"Q{i}: " + " ".join(rng.choice(words) for _ in range(10)),
                    completion=" " + " ".join(rng.choice(words) for _ in range(12)),
                    id=f"e{i}") for i in range(n)]


def _seeded_set():
    """20 distinct examples; duplication (seed 3) repeats 5 of them 4 times; 3 more are copied
    as new rows: one exact up to case and whitespace, two with one word changed."""
    exs = _distinct(20)
    expanded, manifest = apply_duplication(exs, Duplication(fraction=0.25, times=4, seed=3))
    repeated = [r["id"] for r in manifest if r["times_per_epoch"] == 4]
    extra = [dataclasses.replace(exs[0], id="copy-exact",
                                 prompt="  " + exs[0].prompt.upper() + "\n"),
             dataclasses.replace(exs[1], id="copy-near-1",
                                 completion=exs[1].completion.replace(" ", "  ", 1) + " end"),
             dataclasses.replace(exs[2], id="copy-near-2",
                                 prompt=exs[2].prompt + " please")]
    manifest += [{"id": e.id, "times_per_epoch": 1, "prompt_chars": len(e.prompt),
                  "completion_chars": len(e.completion)} for e in extra]
    return exs, expanded + extra, manifest, repeated


def test_normalize():
    assert normalize(" A\u00a0b\n\nC ") == "a b c"


def test_none_keeps_everything():
    _, expanded, _, _ = _seeded_set()
    kept, removed = dedup_examples(expanded, mode="none")
    assert kept == expanded and removed == []


def test_exact_removes_repeats_and_the_normalized_copy():
    exs, expanded, manifest, repeated = _seeded_set()
    assert len(expanded) == 20 + 5 * 3 + 3
    kept, removed = dedup_examples(expanded, mode="exact")
    assert [e.id for e in kept] == [e.id for e in exs] + ["copy-near-1", "copy-near-2"]
    assert len(removed) == 5 * 3 + 1
    assert {"id": "copy-exact", "duplicate_of": "e0", "kind": "exact", "jaccard": 1.0} in removed
    rows = {r["id"]: r for r in dedup_manifest(manifest, removed)}
    for i in repeated:
        assert rows[i]["times_per_epoch"] == 1
        assert rows[i]["dedup"] == {"duplicate_of": i, "kind": "exact", "jaccard": 1.0,
                                    "removed_copies": 3}
    assert rows["copy-exact"]["times_per_epoch"] == 0
    assert rows["copy-exact"]["dedup"]["duplicate_of"] == "e0"
    assert "dedup" not in rows["copy-near-1"]


def test_near_also_removes_the_edited_copies():
    exs, expanded, manifest, _ = _seeded_set()
    kept, removed = dedup_examples(expanded, mode="near", threshold=0.8)
    assert [e.id for e in kept] == [e.id for e in exs]
    near = {r["id"]: r for r in removed if r["kind"] == "near"}
    assert set(near) == {"copy-near-1", "copy-near-2"}
    assert near["copy-near-1"]["duplicate_of"] == "e1"
    assert near["copy-near-2"]["duplicate_of"] == "e2"
    assert all(0.8 <= r["jaccard"] < 1.0 for r in near.values())
    rows = {r["id"]: r for r in dedup_manifest(manifest, removed)}
    assert rows["copy-near-2"]["times_per_epoch"] == 0
    assert rows["copy-near-2"]["dedup"]["kind"] == "near"
    # the same input twice gives the same removals (fixed MinHash seed)
    assert dedup_examples(expanded, mode="near", threshold=0.8)[1] == removed


def test_near_high_threshold_keeps_the_edited_copies():
    _, expanded, _, _ = _seeded_set()
    _, removed = dedup_examples(expanded, mode="near", threshold=0.99)
    assert {r["kind"] for r in removed} == {"exact"}


def test_config_field():
    import pytest

    from finemem.config import parse_config
    from finemem.errors import UserError

    raw = {"run_dir": "r", "data": {"train": {"source": "builtin:arith"}, "dedup": "near",
                                    "dedup_threshold": 0.7}}
    cfg = parse_config(raw)
    assert cfg.data.dedup == "near"
    assert cfg.digest() != parse_config({**raw, "data": {"train": raw["data"]["train"]}}).digest()
    with pytest.raises(UserError, match="data.dedup"):
        parse_config({**raw, "data": {**raw["data"], "dedup": "fuzzy"}})
