"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Usage:
    from finemem.io import atomic_file, publish_dir, write_json_atomic, write_text_atomic
    write_text_atomic(run_dir / "config.yaml", cfg.to_yaml())
    write_json_atomic(ckpt / "finemem_ckpt.json", meta)          # json.dumps(obj, indent=1)
    with atomic_file(out / "metrics.parquet") as tmp:            # any writer that takes a path
        pq.write_table(table, tmp)
    publish_dir(tmp_folder, run_dir / "checkpoints" / name)      # a finished folder, whole

The text goes to a temporary file in the same folder (so the rename stays on one file system),
is flushed and fsynced, then renamed over `path` with `os.replace`. On failure the temporary
file is removed and `path` is left as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from finemem.errors import UserError


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends normally, what was written
    there is fsynced and renamed over `path`; when it raises, the temporary file is removed and
    `path` is left as it was."""
    path = Path(path)
    # one name per process and thread, so concurrent writers never share a temporary file
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically (temporary file in the same folder, fsync, replace).
    The file is created like any new file (the umask sets its mode)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def publish_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move the finished folder `tmp` to `final` (same file system), replacing an older
    `final` (a replay after a crash, a forced rebuild): readers never see a half-written
    folder under the final name."""
    final = Path(final)
    if final.exists():
        shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def write_json_atomic(path: str | os.PathLike, obj, *, indent: int = 1) -> None:
    """Write `obj` as JSON (``json.dumps(obj, indent=indent)``) to `path` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=indent))


def write_doc_section(path: str | os.PathLike, name: str, markdown: str, *,
                      header: str = "") -> None:
    """Replace the text between `<!-- NAME -->` and `<!-- /NAME -->` in the Markdown file
    `path` (appended when absent; the file starts with `header` when new), atomically, leaving
    the other sections alone: several commands share one document this way."""
    import re

    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else header
    block = f"<!-- {name} -->\n{markdown.strip()}\n<!-- /{name} -->"
    pat = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    text = pat.sub(lambda _: block, text) if pat.search(text) else (
        text.rstrip() + "\n\n" + block + "\n" if text.strip() else block + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)


def inside(run_dir: Path, path: str | Path) -> Path:
    """`path` (relative to the run folder, or absolute) resolved, refused when it leaves it."""
    run_dir = Path(run_dir).resolve()
    p = Path(path)
    full = (p if p.is_absolute() else run_dir / p).resolve()
    if full != run_dir and run_dir not in full.parents:
        raise UserError(f"output path leaves the run folder ({path}); give a folder inside it",
                        source=str(run_dir), field="--out")
    return full
