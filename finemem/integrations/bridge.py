"""Register a checkpoint written by another trainer (the HF `Trainer`'s `checkpoint-N`) as a
checkpoint of a finemem run folder, so the engine, the audit loop and the reports see it like
one of `finemem train`'s.

    info = register_checkpoint(Path("out/checkpoint-40"), run_dir / "checkpoints", step=40,
                               epoch=2.0, base_model="/path/to/base")   # kind detected

The weight files (safetensors) and their configs are hard-linked (copied when linking is not
possible, e.g. across file systems) into `checkpoints/.tmp-step-000040`, the metadata file is
written last and the folder renamed into place: the layout of `finemem.train.checkpoint`,
complete or absent. The trainer's own pickled state (optimizer.pt, rng_state.pth,
training_args.bin) is never read. Linked files survive the trainer's `save_total_limit`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from finemem.errors import UserError
from finemem.io import publish_dir, write_json_atomic
from finemem.train.checkpoint import CKPT_META, checkpoint_name, content_hash, weight_files

# what a model folder needs to load: weights (safetensors only) and their configs
KEEP = ("*.safetensors", "model.safetensors.index.json", "config.json",
        "generation_config.json", "adapter_config.json")


def checkpoint_kind(src: Path) -> str:
    """'lora' for a peft adapter folder, 'full' for a model folder with safetensors weights."""
    if (src / "adapter_model.safetensors").is_file() and (src / "adapter_config.json").is_file():
        return "lora"
    if any(src.glob("*.safetensors")) and (src / "config.json").is_file():
        return "full"
    raise UserError("no safetensors weights in this checkpoint folder (set save_safetensors, "
                    "the default, in the trainer's arguments)", source=str(src))


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def register_checkpoint(src: str | Path, ckpt_root: str | Path, *, step: int, epoch: float,
                        base_model: str, kind: str | None = None) -> dict:
    """Bring `src` into `ckpt_root` as step-NNNNNN; returns {name, path, kind, content_hash}."""
    src, ckpt_root = Path(src), Path(ckpt_root)
    kind = kind or checkpoint_kind(src)
    name = checkpoint_name(step)
    final, tmp = ckpt_root / name, ckpt_root / f".tmp-{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        for pattern in KEEP:
            for f in src.glob(pattern):
                if f.is_file() and not (tmp / f.name).exists():
                    _link(f, tmp / f.name)
        chash = content_hash(weight_files(tmp))
        write_json_atomic(tmp / CKPT_META, {"step": step, "epoch": epoch, "kind": kind,
                                            "base_model": base_model, "content_hash": chash,
                                            "source": str(src.resolve())})
        publish_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"name": name, "path": str(final), "kind": kind, "content_hash": chash}
