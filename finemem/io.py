"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Usage:
    from finemem.io import write_json_atomic, write_text_atomic
    write_text_atomic(run_dir / "config.yaml", cfg.to_yaml())
    write_json_atomic(ckpt / "finemem_ckpt.json", meta)          # json.dumps(obj, indent=1)

The text goes to a temporary file in the same folder (so the rename stays on one file system),
is flushed and fsynced, then renamed over `path` with `os.replace`. On failure the temporary
file is removed and `path` is left as it was.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically (temporary file in the same folder, fsync, replace)."""
    path = Path(path)
    # one name per process and thread, so concurrent writers never share a temporary file;
    # opened like any new file (the umask sets its mode, as for a plain write)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding=encoding) as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json_atomic(path: str | os.PathLike, obj, *, indent: int = 1) -> None:
    """Write `obj` as JSON (``json.dumps(obj, indent=indent)``) to `path` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=indent))
