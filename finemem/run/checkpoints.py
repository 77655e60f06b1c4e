"""The checkpoint format of a run folder: how a complete checkpoint is marked, which files hold
its weights, their content hash, and listing a folder's checkpoints. `finemem.train.checkpoint`
writes checkpoints in this format; the engine, audits, `finemem merge` and exports read it.

    list_checkpoints(run_dir / "checkpoints")     # [{"name", "path", "step", "epoch", "kind",
                                                  #   "base_model", "content_hash"}] by step
    content_hash(weight_files(path))              # sha256 of a checkpoint's weights

Layout (pinned):
    checkpoints/step-000120/   written as checkpoints/.tmp-step-000120, then renamed, so a folder
                               that exists is complete. finemem_ckpt.json holds {step, epoch,
                               kind, base_model, content_hash}.
      full: model.safetensors (+ config.json, generation_config.json)
      lora: adapter_model.safetensors + adapter_config.json
      head: head.safetensors holding only "lm_head.weight"
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from finemem.errors import UserError
from finemem.io import write_json_atomic

# The metadata file that marks a complete checkpoint folder (the engine, audits and `finemem
# merge` read and write it through these names), and the one tensor of a head checkpoint.
CKPT_META = "finemem_ckpt.json"
HEAD_KEY = "lm_head.weight"
WEIGHT_FILES = {"full": None, "lora": "adapter_model.safetensors", "head": "head.safetensors"}


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def weight_files(path: Path) -> list[Path]:
    """The safetensors weight files of a checkpoint folder, in a fixed order."""
    return sorted(Path(path).glob("*.safetensors"))


def check_weights(path: str | Path) -> None:
    """Raise `UserError` when a safetensors file of the checkpoint folder `path` is truncated or
    corrupt: its 8-byte header length, JSON header and tensor offsets must account for the
    file's size exactly. Reads the headers only."""
    for f in weight_files(Path(path)):
        size = f.stat().st_size
        try:
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                if size < 8 or not 0 < n <= size - 8:
                    raise ValueError
                header = json.loads(fh.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"),
                      default=0)
            ok = 8 + n + end == size
        except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
            ok = False
        if not ok:
            raise UserError(f"{f.name} is truncated or corrupt ({size} bytes); restore it, or "
                            "retrain the run (`finemem train --force`)", source=str(path))


def content_hash(files: list[Path]) -> str:
    """sha256 over the bytes of `files`, in order (identifies a checkpoint's weights)."""
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def read_checkpoint_meta(ckpt: str | Path) -> dict | None:
    """The finemem_ckpt.json record of a checkpoint folder; None when it has none (not a
    finemem checkpoint, or not complete: the record is written last)."""
    meta = Path(ckpt) / CKPT_META
    return json.loads(meta.read_text("utf-8")) if meta.is_file() else None


def list_checkpoints(ckpt_root: str | Path, pattern: str = "step-*", *,
                     by_step: bool = True) -> list[dict]:
    """Complete checkpoints in the folders of `ckpt_root` that match `pattern`, by step (or by
    folder name when `by_step` is False): [{"name", "path", **finemem_ckpt.json}]."""
    out = []
    for d in sorted(Path(ckpt_root).glob(pattern)):
        meta = read_checkpoint_meta(d)
        if meta is not None:
            out.append({"name": d.name, "path": str(d), **meta})
    return sorted(out, key=lambda c: c["step"]) if by_step else out




def _base_files(base_model: str) -> list[Path]:
    path = Path(base_model)
    if not path.is_dir():
        return []
    return sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))


def base_files_key(base_model: str) -> str:
    """What identifies a base model's weight files without reading them: each file's path,
    size and mtime ('hub:<id>' for a hub id)."""
    files = _base_files(base_model)
    if not files:
        return "hub:" + base_model
    return "|".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)


def base_content_hash(base_model: str) -> str:
    """Content hash of a base model folder's weights (memoised in
    finemem_home()/engine/base_hashes.json by `base_files_key`); 'hub:<id>' for a hub id."""
    files = _base_files(base_model)
    if not files:
        return "hub:" + base_model
    from finemem.home import finemem_home

    memo_file = finemem_home() / "engine" / "base_hashes.json"
    key = base_files_key(base_model)
    memo = json.loads(memo_file.read_text("utf-8")) if memo_file.is_file() else {}
    if key not in memo:
        memo[key] = content_hash(files)
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(memo_file, memo)
    return memo[key]
