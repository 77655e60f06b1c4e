"""Self-built base models: a byte-level BPE tokenizer and a small Llama pretrained from scratch.

Usage:
    from finemem.models.base import build_base
    path = build_base("tiny")          # builds once (~3 min on 2 cores), then reuses the cache
    model = AutoModelForCausalLM.from_pretrained(path)

The pretraining corpus mixes `pretrain_texts` of every registered task (drawn with other seeds
than the fine-tuning splits, and disjoint from them). A built model lives in
`finemem_home()/base/<size>-<hash12>/`, where the hash covers the size spec, the corpus spec (task
list, each task's spec and a sample of its generated texts, CORPUS_VERSION), the seeds and the
tokenizer spec, so a second call with the same inputs returns at once. Folders are written
atomically (temp dir + rename). A base shipped in the package with the same hash
(`finemem.models.shipped`: builtin:tiny) is copied in, checked against its sha256 sums,
instead of being pretrained.

Sequence format used everywhere in finemem:
    prompt/completion example:  [bos] + tok(prompt) + tok(completion) + [eos]
    pretraining text:           [bos] + tok(text) + [eos]
with each part tokenized separately (add_special_tokens=False).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from finemem.errors import UserError
from finemem.home import finemem_home
from finemem.io import publish_dir

CORPUS_VERSION = 1  # bump when the corpus mixing changes
BUILD_VERSION = 1  # bump when the tokenizer or pretraining procedure (_pretrain.py) changes
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"

# Model, tokenizer, corpus and schedule per size. `chars` is the corpus size in characters,
# `arith_share` arith's fraction of it (the rest is split evenly over the other tasks).
SIZES: dict[str, dict] = {
    "test": dict(hidden=64, layers=2, heads=4, ffn=160, vocab=1024, ctx=256, chars=600_000,
                 steps=40, batch=8, lr=3e-3, warmup=5, final_lr_frac=0.1, arith_share=0.5),
    "tiny": dict(hidden=128, layers=4, heads=4, ffn=384, vocab=2048, ctx=256, chars=10_000_000,
                 steps=1200, batch=8, lr=2e-3, warmup=40, final_lr_frac=0.3, arith_share=0.85),
    "small": dict(hidden=256, layers=6, heads=8, ffn=768, vocab=4096, ctx=512,
                  chars=40_000_000, steps=3000, batch=16, lr=1.5e-3, warmup=100,
                  final_lr_frac=0.2, arith_share=0.5),
    "base": dict(hidden=384, layers=10, heads=6, ffn=1152, vocab=4096, ctx=512,
                 chars=150_000_000, steps=8000, batch=32, lr=1e-3, warmup=300,
                 final_lr_frac=0.1, arith_share=0.4),
}
SEEDS = {"corpus": 1234, "model": 0}
BUILDER = ".builder"  # "<host> <pid>" of the process building into a temp folder
CORPUS_SAMPLE = 300  # texts per task hashed into the cache key


def build_base(size: str, *, force: bool = False, progress: bool = True,
               device: str | None = None, overrides: dict | None = None) -> Path:
    """Build (or reuse) the built-in base model of the given size; return its HF folder.

    Parameters
    ----------
    size : {"test", "tiny", "small", "base"}
    force : rebuild even when a cached folder exists.
    progress : show rich progress bars.
    device : where to pretrain (`finemem.models.load.pick_device`; default auto). Not part of
        the cache key: like the thread count, it changes the weights in the last bits only.
    overrides : keys of the size's spec (SIZES) set to other values, e.g. {"steps": 600}; such
        a base has its own hash and folder, which `model:` then names (builtin:SIZE stays the
        shipped spec).
    """
    spec, final = _spec_and_folder(size, overrides)
    digest, root = final.name.rsplit("-", 1)[1], final.parent
    if is_built(final) and not force:
        return final
    root.mkdir(parents=True, exist_ok=True)
    _remove_dead_builds(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{size}-{digest}-", dir=root))
    (tmp / BUILDER).write_text(f"{socket.gethostname()} {os.getpid()}")
    try:
        from finemem.models.shipped import install_shipped

        if force or not install_shipped(size, digest, tmp):  # the package's own copy
            t0 = time.time()
            from finemem.models import _pretrain

            info = _pretrain.build(spec, tmp, progress=progress, device=device or "auto")
            info.update(size=size, hash=digest, spec=spec,
                        build_seconds=round(time.time() - t0, 1))
            (tmp / "finemem_base.json").write_text(json.dumps(info, indent=2))
        (tmp / BUILDER).unlink()
        publish_dir(tmp, final)  # a forced rebuild (or a concurrent build won): replace it
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def built_base(size: str) -> Path | None:
    """The cached folder of builtin:SIZE when it is built (or installed), else None."""
    final = _spec_and_folder(size, None)[1]
    return final if is_built(final) else None


def is_built(folder: Path) -> bool:
    return folder.is_dir() and (folder / "finemem_base.json").exists()


def _spec_and_folder(size: str, overrides: dict | None) -> tuple[dict, Path]:
    """The build spec and the cache folder it names, finemem_home()/base/<size>-<hash12>."""
    check_size(size)
    spec = build_spec(size, overrides)
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return spec, finemem_home() / "base" / f"{size}-{digest}"


def _remove_dead_builds(root: Path) -> None:
    """Delete temp folders of builds whose process is gone (killed with -9, machine crashed):
    the owner's host and pid are in the folder's BUILDER file."""
    host = socket.gethostname()
    for d in root.glob(".*-*-*"):
        try:
            owner_host, pid = (d / BUILDER).read_text().split()
            if owner_host != host:
                continue  # another machine sharing FINEMEM_HOME: cannot tell, leave it
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (OSError, ValueError):
            pass  # no or unreadable BUILDER file, or a pid we may not signal: leave it


_SPECS: dict = {}


def build_spec(size: str, overrides: dict | None = None) -> dict:
    """Everything a base model is built from; its hash names the cache folder. `overrides`:
    keys of SIZES[size] set to other numbers. Computed once per process and set of registered
    tasks (drawing the corpus sample takes about a second, and every command that resolves
    `builtin:SIZE` asks, some several times)."""
    from finemem.data.tasks import task_names

    key = (size, json.dumps(overrides or {}, sort_keys=True), tuple(task_names()))
    if key not in _SPECS:
        _SPECS[key] = _build_spec(size, overrides)
    return copy.deepcopy(_SPECS[key])


def _build_spec(size: str, overrides: dict | None) -> dict:
    from finemem.data.tasks import get_task, task_names

    dims = _override(size, overrides or {})
    tasks, sample = {}, hashlib.sha256()
    for name in task_names():
        task = get_task(name)
        if not getattr(task, "in_base_corpus", True):
            continue  # e.g. records: a new task of this kind leaves the built bases valid
        tasks[name] = task.spec() if callable(getattr(task, "spec", None)) else None
        # A sample of the generated corpus, not the source: refactoring a generator without
        # changing its text keeps the cache; changing its text (generators are prefix-stable,
        # so the first texts change too) builds a new base.
        try:
            texts = task.pretrain_texts(CORPUS_SAMPLE, seed=SEEDS["corpus"])
        except NotImplementedError:
            texts = []
        sample.update(name.encode() + b"\0" + "\0".join(texts).encode() + b"\1")
    return {"size": dims,
            "corpus": {"version": CORPUS_VERSION, "tasks": tasks,
                       "sample_sha": sample.hexdigest()[:16]},
            "seeds": dict(SEEDS), "build_version": BUILD_VERSION,
            "tokenizer": {"kind": "byte-level-bpe", "vocab": dims["vocab"],
                          "special": [BOS, EOS, PAD], "numbers": "0-99 forced single tokens"}}


def _override(size: str, overrides: dict) -> dict:
    """SIZES[size] with `overrides` set; an unknown key or a value of another kind than the
    spec's (a whole number for `steps`) is refused."""
    dims = dict(SIZES[size])
    for key, value in overrides.items():
        if key not in dims:
            raise UserError(f"'{key}' is not a key of a base build; keys: {', '.join(dims)}",
                            field="--set")
        kind = type(dims[key])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (kind is int and not float(value).is_integer()):
            raise UserError(f"{key} takes a {'whole ' if kind is int else ''}number, e.g. "
                            f"{key}={dims[key]}; got {value!r}", field="--set")
        dims[key] = kind(value)
    return dims


def check_size(size: str, *, field: str = "size") -> str:
    """`size` when it is a key of SIZES, else a `UserError` listing them."""
    if size not in SIZES:
        raise UserError(f"unknown base size '{size}'; choose one of: {', '.join(SIZES)}",
                        field=field)
    return size


def parse_builtin(name: str) -> str | None:
    """'builtin:tiny' -> 'tiny'; anything else -> None; an unknown size raises `UserError`."""
    if not name.startswith("builtin:"):
        return None
    size = name.split(":", 1)[1]
    if size not in SIZES:
        raise UserError(f"unknown builtin model '{name}'; available: "
                        f"{', '.join('builtin:' + s for s in SIZES)}", field="model")
    return size


def lr_at(step: int, *, lr: float, warmup: int, total: int, final_lr_frac: float) -> float:
    """Linear warmup, then cosine from lr down to final_lr_frac * lr at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return lr * (final_lr_frac + (1 - final_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))
