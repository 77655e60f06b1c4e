"""The checkpoints of a run, and the models behind them, loaded as cheaply as the kind allows.

Usage:
    refs = load_run_checkpoints(run_dir)        # step 0 (the base) + checkpoints/ by step
    for ref, model in iter_models(run_dir):
        scores = score(model, pairs)
        del model                                # lets a full run free it before the next load

Per kind of run:
  * lora: the base is loaded once and wrapped once; later adapters are copied into the same
    LoRA modules (``set_peft_model_state_dict``), or loaded under a new name and swapped in when
    their adapter config differs. The base (step 0) is scored through ``disable_adapter``.
  * head: the base is loaded once, its output head untied from the input embeddings, and each
    checkpoint's ``lm_head.weight`` copied in (the base's own head is restored for step 0).
  * full: one checkpoint at a time, freed (and the CUDA cache emptied) before the next load.
    Full refs (e.g. merged checkpoints) may also sit among lora or head refs.

Each ref carries the sha256 ``content_hash`` of its weight files (the results-store cache key).
The base's hash is computed over its *.safetensors files once, remembered in
``finemem_home()/engine/base_hashes.json`` by path, size and mtime, and stored in the run's
results store (`RunFolder.base_hash`), where readers without the model find it.
"""

from __future__ import annotations

import gc
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from finemem.engine.score import large_model
from finemem.errors import UserError
from finemem.models.load import peft_quiet, untie_head
from finemem.run import BASE, RunFolder
from finemem.run.checkpoints import (HEAD_KEY, base_content_hash,  # noqa: F401 (re-exported)
                                     content_hash, list_checkpoints, weight_files)


@dataclass(frozen=True)
class CheckpointRef:
    name: str  # "step-000120"; the base is "step-000000"
    step: int
    epoch: float
    kind: str  # "base" | "full" | "lora" | "head"
    path: str | None  # the checkpoint folder (None for the base)
    base_model: str  # resolved base model folder or hub id
    content_hash: str


def _ref(c: dict) -> CheckpointRef:
    """A ref from a `run.checkpoints.list_checkpoints` entry (name, path and the metadata)."""
    chash = c.get("content_hash") or content_hash(weight_files(Path(c["path"])))
    return CheckpointRef(c["name"], int(c["step"]), float(c.get("epoch", 0.0)), c["kind"],
                         c["path"], str(c["base_model"]), chash)


def load_run_checkpoints(run_dir: str | Path, *, store=None) -> list[CheckpointRef]:
    """The base as step 0, then every complete folder in run_dir/checkpoints/, by step
    (a folder is complete once it holds its metadata: finemem writes it before the rename).
    `store`: the run's open results store, when the caller has one."""
    run = RunFolder(run_dir)
    cfg = run.load_settings()
    refs = [_ref(c) for c in list_checkpoints(run.checkpoints_dir)]
    base = refs[0].base_model if refs else None
    if base is None or (base.startswith(("/", ".", "~")) and not Path(base).exists()):
        # no checkpoint yet, or the recorded base folder moved (e.g. another FINEMEM_HOME)
        from finemem.models.load import resolve_model

        base = resolve_model(cfg.model)
        refs = [CheckpointRef(r.name, r.step, r.epoch, r.kind, r.path, base, r.content_hash)
                for r in refs]
    if store is not None:
        bhash = run.base_hash(store, base)
    elif run.has_results():
        with run.open_store() as own:
            bhash = run.base_hash(own, base)
    else:
        bhash = base_content_hash(base)
    return [CheckpointRef(BASE, 0, 0.0, "base", None, base, bhash), *refs]


def list_merges(run_dir: str | Path) -> list[CheckpointRef]:
    """Checkpoints written by `finemem merge` into RUN_DIR/merges/, by name. They are audited
    like any other checkpoint and shown beside the trajectory."""
    return [_ref(c) for c in list_checkpoints(RunFolder(run_dir).merges_dir, "*", by_step=False)]


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def iter_models(run_dir: str | Path, refs: list[CheckpointRef] | None = None, *,
                device: str = "auto", dtype: str = "auto"):
    """Yield (ref, model) for each ref (default: all of the run), in order, in eval mode.

    A yielded model is valid until the next iteration: a lora/head model is the same object
    with other weights, and a full model is freed. Full checkpoints (e.g. merges) may sit
    among the lora or head ones; lora and head checkpoints cannot be mixed.
    """
    from finemem.models.load import load_model, pick_device

    run_dir = Path(run_dir)
    cfg = RunFolder(run_dir).load_settings()
    refs = load_run_checkpoints(run_dir) if refs is None else list(refs)
    kinds = {r.kind for r in refs}
    if {"lora", "head"} <= kinds:
        raise UserError("lora and head checkpoints in one list; audit one run's checkpoints "
                        "at a time", source=str(run_dir))
    dev = pick_device(device)
    load_kw = dict(device=dev, dtype=dtype,
                   trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle)
    swap_cls = _LoraSwap if "lora" in kinds else _HeadSwap if "head" in kinds else None
    swap = None
    try:
        for ref in refs:
            if ref.kind == "full" or (ref.kind == "base" and swap_cls is None):
                model = load_model(ref.path if ref.kind == "full" else ref.base_model,
                                   **load_kw)
                yield ref, model.eval()
                del model
                _free(dev)
                continue
            if swap is None:
                swap = swap_cls(load_model(ref.base_model, **load_kw).eval())
            yield ref, swap.get(ref)
    finally:
        if swap is not None:
            swap.close()
            del swap
            _free(dev)


@contextmanager
def adapter_off(model):
    """Inside the block, `model` (LoRA-wrapped, as `iter_models` yields a lora checkpoint) is
    its base: a merged adapter unmerged, the adapters disabled; restored after. So the base's
    scores need no second copy of the weights (SmolLM2-135M: 538 MB and a load). Yields None
    for a model without LoRA adapters."""
    if not (hasattr(model, "peft_config") and hasattr(model, "disable_adapter")):
        yield None
        return
    merged = any(getattr(m, "merged", False) for m in model.modules())
    if merged:
        model.unmerge_adapter()
    try:
        with model.disable_adapter():
            yield model
    finally:
        if merged:
            model.merge_adapter()


def _adapter_shape(path: Path) -> dict:
    cfg = json.loads((path / "adapter_config.json").read_text("utf-8"))
    keys = ("peft_type", "r", "lora_alpha", "target_modules", "use_rslora", "use_dora",
            "rank_pattern", "alpha_pattern", "bias", "modules_to_save", "fan_in_fan_out")
    return {k: cfg.get(k) for k in keys}


class _LoraSwap:
    """One base model, wrapped once; adapters copied in or swapped; the base via
    disable_adapter (entered by `get`, left by the next `get` or `close`). On a large model
    (`engine.score.large_model`) each checkpoint's adapter is merged into the weights while
    it is audited and unmerged before the next `get` (7 extra small matmuls per layer cost
    SmolLM2-135M about 10% of a pass); the weights it leaves differ from the base's by float
    rounding."""

    def __init__(self, base):
        self.base, self.model, self.shape, self.off = base, None, None, None
        self.active = "default"
        self.merge, self.merged = large_model(base), False

    def get(self, ref: CheckpointRef):
        self._enable()
        self._unmerge()
        if ref.kind == "base":
            if self.model is None:
                return self.base
            self.off = self.model.disable_adapter()
            self.off.__enter__()
            return self.model
        with peft_quiet():
            return self._load_adapter(Path(ref.path), ref)

    def _load_adapter(self, path: Path, ref: CheckpointRef):
        from peft import PeftModel, set_peft_model_state_dict
        from safetensors.torch import load_file

        shape = _adapter_shape(path)
        if self.model is None:
            self.model = PeftModel.from_pretrained(self.base, str(path), adapter_name=self.active)
        elif shape == self.shape:
            sd = load_file(str(path / "adapter_model.safetensors"))
            res = set_peft_model_state_dict(self.model, sd, adapter_name=self.active)
            bad = list(getattr(res, "unexpected_keys", []) or [])
            if bad:
                raise UserError(f"adapter does not fit the loaded LoRA modules: unexpected "
                                f"keys {bad[:3]}", source=str(path))
        else:  # another adapter shape: load it beside, swap, drop the old one
            new = f"a{ref.step}" if f"a{ref.step}" != self.active else f"b{ref.step}"
            self.model.load_adapter(str(path), adapter_name=new)
            self.model.set_adapter(new)
            self.model.delete_adapter(self.active)
            self.active = new
        self.shape = shape
        if self.merge:
            self.model.merge_adapter()
            self.merged = True
        return self.model.eval()

    def _unmerge(self) -> None:
        if self.merged:
            self.model.unmerge_adapter()
            self.merged = False

    def _enable(self) -> None:
        if self.off is not None:
            self.off.__exit__(None, None, None)
            self.off = None

    def close(self) -> None:
        self._enable()
        self._unmerge()
        self.base = self.model = None


class _HeadSwap:
    """One base model with its output head untied; each checkpoint's head copied in."""

    def __init__(self, base):
        head = base.get_output_embeddings()
        if head is None or not isinstance(head, torch.nn.Linear):
            raise UserError("head checkpoints need a model with a Linear output head")
        untie_head(base)  # tied: untie, so the inputs stay put while heads are copied in
        self.base, self.head, self.original = base, head, head.weight.detach().clone()

    def get(self, ref: CheckpointRef):
        from safetensors.torch import load_file

        w = self.original
        if ref.kind != "base":
            w = load_file(str(Path(ref.path) / "head.safetensors")).get(HEAD_KEY)
            if w is None or w.shape != self.head.weight.shape:
                raise UserError(f"head.safetensors must hold '{HEAD_KEY}' of shape "
                                f"{tuple(self.head.weight.shape)}", source=str(ref.path))
        with torch.no_grad():
            self.head.weight.copy_(w)
        return self.base

    def close(self) -> None:
        self.base = self.head = self.original = None
