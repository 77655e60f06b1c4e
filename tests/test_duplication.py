"""Duplication: counts, determinism, manifest rows, and manifest round-trip."""

import json

import pytest

from finemem.config import Duplication
from finemem.data.duplication import (apply_duplication, chosen_indices, read_manifest,
                                      write_manifest)
from finemem.data.example import Example
from finemem.errors import UserError


def examples(n):
    return [Example(prompt="p" * (i + 1), completion="c" * (2 * i + 1), id=f"e{i}")
            for i in range(n)]


def test_counts_and_manifest_rows():
    exs = examples(10)
    expanded, rows = apply_duplication(exs, Duplication(fraction=0.3, times=4, seed=5))
    chosen = [r["id"] for r in rows if r["times_per_epoch"] == 4]
    assert len(chosen) == 3  # round(0.3 * 10)
    assert [r["times_per_epoch"] for r in rows].count(1) == 7
    assert len(expanded) == 7 + 3 * 4
    for ex in exs:
        assert expanded.count(ex) == (4 if ex.id in chosen else 1)
    assert [r["id"] for r in rows] == [e.id for e in exs]  # original order
    assert rows[2] == {"id": "e2", "times_per_epoch": rows[2]["times_per_epoch"],
                       "prompt_chars": 3, "completion_chars": 5}
    # original order with the repeats adjacent
    dedup = [ex.id for i, ex in enumerate(expanded) if i == 0 or expanded[i - 1] is not ex]
    assert dedup == [e.id for e in exs]


def test_rounding_half_up_and_edges():
    assert len(chosen_indices(10, 0.25, seed=0)) == 3  # 2.5 -> 3
    assert len(chosen_indices(10, 0.24, seed=0)) == 2
    assert chosen_indices(4, 1.0, seed=9) == [0, 1, 2, 3]
    assert chosen_indices(4, 0.0, seed=9) == []
    exs = examples(5)
    expanded, rows = apply_duplication(exs, Duplication())  # defaults: no duplication
    assert expanded == exs and all(r["times_per_epoch"] == 1 for r in rows)


def test_deterministic_in_seed():
    exs = examples(50)
    a = apply_duplication(exs, Duplication(fraction=0.2, times=3, seed=1))
    b = apply_duplication(exs, Duplication(fraction=0.2, times=3, seed=1))
    c = apply_duplication(exs, Duplication(fraction=0.2, times=3, seed=2))
    assert a == b
    assert a[1] != c[1]  # another seed picks other examples (10 of 50)


def test_needs_unique_ids():
    exs = examples(3)
    exs[2].id = "e0"
    with pytest.raises(ValueError, match="unique"):
        apply_duplication(exs, Duplication(fraction=0.5, times=2))


def test_manifest_round_trip(tmp_path):
    _, rows = apply_duplication(examples(6), Duplication(fraction=0.5, times=2, seed=3))
    rows[0]["id"] = "café-0"  # non-ASCII ids survive
    path = tmp_path / "run" / "manifest.jsonl"
    write_manifest(path, rows)
    assert read_manifest(path) == rows
    assert [p.name for p in path.parent.iterdir()] == ["manifest.jsonl"]  # no temp left over
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0])["id"] == "café-0" and len(lines) == 6


def test_read_manifest_errors(tmp_path):
    with pytest.raises(UserError, match="manifest not found"):
        read_manifest(tmp_path / "missing.jsonl")
    p = tmp_path / "manifest.jsonl"
    p.write_text('{"id": "a", "times_per_epoch": 1, "prompt_chars": 1, "completion_chars": 1}\n'
                 '{"id": "b", "times_per_epoch": 1}\n', encoding="utf-8")
    with pytest.raises(UserError) as e:
        read_manifest(p)
    assert str(e.value) == (f"{p}, row 2, field 'prompt_chars': manifest line lacks "
                            "prompt_chars, completion_chars")
    p.write_text("{oops\n", encoding="utf-8")
    with pytest.raises(UserError, match="row 1: damaged manifest line"):
        read_manifest(p)
