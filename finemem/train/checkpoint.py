"""Checkpoints and resume state of a run, in safetensors and JSON only (no pickle anywhere).

Usage:
    info = save_checkpoint(model, run_dir / "checkpoints", step=120, epoch=2.0, kind="lora",
                           base_model=path)              # -> {"name", "path", "content_hash"}
    load_checkpoint_weights(model, info["path"], "lora")

Layout: checkpoints/ in the format of `finemem.run.checkpoints`, and
    state/                     resume state of the latest checkpoint: optimizer.safetensors,
                               rng.safetensors, trainer_state.json (written last).

Crash safety: the new state is written to state.tmp/ before its checkpoint is renamed into
place, and swapped into state/ after. `recover_state` finishes or discards a swap that a crash
interrupted, so state/ always belongs to a complete checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from finemem import faults
from finemem.errors import UserError
from finemem.io import publish_dir, write_json_atomic

# The format (metadata file, weight files, content hash, listing) lives in finemem.run; these
# names stay importable from here.
from finemem.run.checkpoints import (CKPT_META, HEAD_KEY, WEIGHT_FILES,  # noqa: F401
                                     check_weights, checkpoint_name, content_hash,
                                     list_checkpoints, read_checkpoint_meta, weight_files)


def save_checkpoint(model, ckpt_root: Path, *, step: int, epoch: float, kind: str,
                    base_model: str, extra_meta: dict | None = None) -> dict:
    """Write one checkpoint atomically (temp folder + rename). `model` is unwrapped;
    `extra_meta` (e.g. the DP epsilon spent) goes into finemem_ckpt.json."""
    ckpt_root = Path(ckpt_root)
    name = checkpoint_name(step)
    final, tmp = ckpt_root / name, ckpt_root / f".tmp-{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    if kind == "full":
        model.save_pretrained(tmp)
    elif kind == "lora":
        model.save_pretrained(tmp)
        (tmp / "README.md").unlink(missing_ok=True)  # peft's model card: not part of the adapter
    elif kind == "head":
        w = model.get_output_embeddings().weight.detach()
        save_file({HEAD_KEY: w.contiguous().cpu()}, str(tmp / "head.safetensors"))
    else:
        raise ValueError(f"unknown checkpoint kind '{kind}'")
    faults.point("ckpt_write")
    chash = content_hash(weight_files(tmp))
    meta = {"step": step, "epoch": epoch, "kind": kind, "base_model": base_model,
            "content_hash": chash, **(extra_meta or {})}
    write_json_atomic(tmp / CKPT_META, meta)
    publish_dir(tmp, final)  # a replay after a crash re-creates the same checkpoint
    return {"name": name, "path": str(final), "content_hash": chash}


def load_checkpoint_weights(model, path: str | Path, kind: str) -> None:
    """Load a checkpoint's weights into `model`, built the same way as when it was saved
    (for lora: the peft-wrapped model; for head: the untied model)."""
    path = Path(path)
    if kind == "full":
        sd = {}
        for f in weight_files(path):
            sd.update(load_file(str(f)))
        missing, unexpected = model.load_state_dict(sd, strict=False)
        tied = set(getattr(model, "_tied_weights_keys", None) or ())
        missing = [k for k in missing if k not in tied]
        if missing or unexpected:
            raise UserError(f"checkpoint does not match the model: missing {missing[:5]}, "
                            f"unexpected {list(unexpected)[:5]}", source=str(path))
    elif kind == "lora":
        from peft import set_peft_model_state_dict

        res = set_peft_model_state_dict(model, load_file(str(path / WEIGHT_FILES["lora"])))
        if getattr(res, "unexpected_keys", None):
            raise UserError(f"adapter does not match the model: unexpected keys "
                            f"{res.unexpected_keys[:5]}", source=str(path))
    elif kind == "head":
        w = load_file(str(path / WEIGHT_FILES["head"]))[HEAD_KEY]
        with torch.no_grad():
            model.get_output_embeddings().weight.copy_(w)
    else:
        raise ValueError(f"unknown checkpoint kind '{kind}'")


# resume state -----------------------------------------------------------------------------
def _flatten_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{idx}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"scalars": scalars, "param_groups": sd["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, t in tensors.items():
        _, idx, k = key.split(".", 2)
        state.setdefault(int(idx), {})[k] = t
    for idx, st in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(st)
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    ver, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return tensors, {"python": [ver, list(mt), gauss],
                     "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    ver, mt, gauss = meta["python"]
    random.setstate((ver, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def write_state(state_dir: Path, *, optimizer, scheduler, trainer_state: dict) -> None:
    """Write optimizer, scheduler and RNG state into `state_dir` (trainer_state.json last)."""
    state_dir = Path(state_dir)
    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
    opt_t, opt_meta = _flatten_optimizer(optimizer.state_dict())
    save_file(opt_t, str(state_dir / "optimizer.safetensors"))
    rng_t, rng_meta = _rng_state()
    save_file(rng_t, str(state_dir / "rng.safetensors"))
    full = {**trainer_state, "optimizer": opt_meta, "scheduler": scheduler.state_dict(),
            "rng": rng_meta}
    write_json_atomic(state_dir / "trainer_state.json", full)


def commit_state(run_dir: Path) -> None:
    """Swap state.tmp/ into state/ (after its checkpoint was renamed into place)."""
    run_dir = Path(run_dir)
    tmp, cur, old = run_dir / "state.tmp", run_dir / "state", run_dir / "state.old"
    if old.exists():
        shutil.rmtree(old)
    if cur.exists():
        os.replace(cur, old)
    os.replace(tmp, cur)
    shutil.rmtree(old, ignore_errors=True)


def recover_state(run_dir: Path) -> None:
    """Finish or discard a state swap that a crash interrupted; drop half-written checkpoints."""
    run_dir = Path(run_dir)
    tmp, cur, old = run_dir / "state.tmp", run_dir / "state", run_dir / "state.old"
    for d in (run_dir / "checkpoints").glob(".tmp-*"):
        shutil.rmtree(d)
    if tmp.exists():
        ts = tmp / "trainer_state.json"
        ckpt = None
        if ts.is_file():
            ckpt = run_dir / "checkpoints" / json.loads(ts.read_text("utf-8"))["checkpoint"]
        if ckpt is not None and (ckpt / CKPT_META).is_file():
            commit_state(run_dir)  # its checkpoint made it: the swap was all that was left
        else:
            shutil.rmtree(tmp)
    if not cur.exists() and old.exists():
        os.replace(old, cur)
    shutil.rmtree(old, ignore_errors=True)


def read_state(run_dir: Path) -> dict | None:
    """The saved trainer state (step, epoch, checkpoint, ...) or None when there is none."""
    f = Path(run_dir) / "state" / "trainer_state.json"
    return json.loads(f.read_text("utf-8")) if f.is_file() else None


def incomplete_note(run_dir: Path) -> str | None:
    """One line saying that a run's training stopped before its last step ("training stopped
    at step 132 of 330 ..."), or None when it finished (or the folder is not a run)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        return None
    st = read_state(run_dir)
    if st is not None and st.get("done"):
        return None
    where = (f"stopped at step {st['step']} of {st['total_steps']}" if st is not None
             else "has no checkpoint yet")
    return (f"this run is incomplete: training {where}; rerun `finemem train` with its config "
            "to finish it")


def restore_state(run_dir: Path, *, optimizer, scheduler) -> dict:
    """Load optimizer, scheduler and RNG state from state/; returns trainer_state.json."""
    state_dir = Path(run_dir) / "state"
    ts = json.loads((state_dir / "trainer_state.json").read_text("utf-8"))
    opt_t = load_file(str(state_dir / "optimizer.safetensors"))
    optimizer.load_state_dict(_unflatten_optimizer(opt_t, ts["optimizer"]))
    scheduler.load_state_dict(ts["scheduler"])
    _set_rng_state(load_file(str(state_dir / "rng.safetensors")), ts["rng"])
    return ts
