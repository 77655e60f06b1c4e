"""finemem.io: the atomic-write helpers (temporary file in the same folder, fsync, replace; a
finished folder published whole)."""

import json
import os

import pytest

from finemem.io import atomic_file, publish_dir, write_json_atomic, write_text_atomic


def test_write_text_atomic_writes_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "config.yaml"
    write_text_atomic(path, "a: 1\n")
    assert path.read_text(encoding="utf-8") == "a: 1\n"
    write_text_atomic(path, "a: 2\n")  # replaces an existing file
    assert path.read_text(encoding="utf-8") == "a: 2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_write_json_atomic_format(tmp_path):
    path = tmp_path / "meta.json"
    obj = {"step": 3, "kind": "lora", "name": "ünï"}
    write_json_atomic(path, obj)
    assert path.read_text(encoding="utf-8") == json.dumps(obj, indent=1)
    write_json_atomic(path, obj, indent=2)
    assert path.read_text(encoding="utf-8") == json.dumps(obj, indent=2)


def test_write_is_a_rename_over_the_old_file(tmp_path, monkeypatch):
    """The new text lands through one os.replace of a sibling temporary file, so a reader
    never sees a half-written file."""
    path = tmp_path / "state.json"
    path.write_text("old")
    calls = []
    real = os.replace

    def spy(src, dst):
        calls.append((str(src), str(dst)))
        assert open(src, encoding="utf-8").read() == "new"  # complete before the rename
        assert path.read_text() == "old"                    # the old file untouched so far
        real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_text_atomic(path, "new")
    assert len(calls) == 1
    src, dst = calls[0]
    assert dst == str(path) and os.path.dirname(src) == str(tmp_path) and src != dst
    assert path.read_text() == "new"


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text("old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_unserialisable_object_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "x.json", {"a": object()})
    assert list(tmp_path.iterdir()) == []


def test_atomic_file_for_any_writer(tmp_path):
    """Writers that take a path (pyarrow, safetensors) get the same guarantee: the target
    appears only when the block ends normally."""
    path = tmp_path / "metrics.csv"
    path.write_text("old")
    with pytest.raises(ValueError):
        with atomic_file(path) as tmp:
            tmp.write_text("half")
            raise ValueError("writer failed")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]
    with atomic_file(path) as tmp:
        assert tmp.parent == tmp_path and tmp != path
        tmp.write_text("new")
        assert path.read_text() == "old"
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_publish_dir_replaces_an_older_folder_whole(tmp_path):
    final = tmp_path / "step-000010"
    final.mkdir()
    (final / "stale.safetensors").write_text("old")
    tmp = tmp_path / ".step-000010.tmp"
    tmp.mkdir()
    (tmp / "model.safetensors").write_text("new")
    publish_dir(tmp, final)
    assert not tmp.exists()
    assert sorted(p.name for p in final.iterdir()) == ["model.safetensors"]
    new = tmp_path / ".other.tmp"
    new.mkdir()
    publish_dir(new, tmp_path / "fresh")  # no older folder: a plain rename
    assert (tmp_path / "fresh").is_dir() and not new.exists()
