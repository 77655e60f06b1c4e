"""Two-point checkpoint merging: w = alpha * w_a + (1 - alpha) * w_b (paper 1's mitigation).

Usage:
    from finemem.models.merge import merge_checkpoints
    merge_checkpoints("runs/x/ckpt-300", "runs/x/ckpt-1000", "runs/x/merged-300-1000", alpha=0.5)

A checkpoint folder holds either a full model (``model.safetensors``) or a peft LoRA adapter
(``adapter_model.safetensors`` + ``adapter_config.json``). Both folders must be of one kind.
Only safetensors is read; the merged folder gets the merged weights, copies of the small config
and tokenizer files of ``dir_a``, and ``merge.json`` recording the sources and alpha.

LoRA adapters: averaging the factors A and B separately is *not* averaging the models, since
(B_a + B_b)(A_a + A_b)/4 != (B_a A_a + B_b A_b)/2. The default ``lora_method="concat"`` is exact:
it stacks the two adapters along the rank,

    A' = [A_a; A_b],   B' = [alpha B_a, (1 - alpha) B_b]   =>   B' A' = alpha B_a A_a + (1-alpha) B_b A_b

with rank r' = 2r and lora_alpha scaled so the scaling factor is unchanged (x2, or x sqrt(2) with
rsLoRA). Bias and modules_to_save tensors are averaged linearly (exact). ``lora_method="linear"``
averages the factors instead (same rank; exact only when both adapters share one A).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from pathlib import Path

import torch

from finemem.errors import UserError

FULL_FILE = "model.safetensors"
ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
SMALL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
               "vocab.txt", "tokenizer.model", "chat_template.jinja")
# adapter_config.json keys that may differ between two checkpoints of one run.
_CONFIG_KEYS_IGNORED = {"revision", "inference_mode", "peft_version"}
_A_SUFFIXES = (".lora_A.weight", ".lora_embedding_A")
_B_SUFFIXES = (".lora_B.weight", ".lora_embedding_B")


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"merge alpha must be in [0, 1] (weight of checkpoint a), got {alpha}",
                        field="alpha")
    return alpha


def _check_same_tensors(sd_a: dict, sd_b: dict) -> None:
    only_a, only_b = sorted(set(sd_a) - set(sd_b)), sorted(set(sd_b) - set(sd_a))
    if only_a or only_b:
        raise UserError(f"the checkpoints hold different tensors (only in a: {only_a[:3]}, only "
                        f"in b: {only_b[:3]}); merge two checkpoints of the same run")
    for k in sd_a:
        if sd_a[k].shape != sd_b[k].shape or sd_a[k].dtype != sd_b[k].dtype:
            raise UserError(f"tensor '{k}' is {tuple(sd_a[k].shape)} {sd_a[k].dtype} in a but "
                            f"{tuple(sd_b[k].shape)} {sd_b[k].dtype} in b; merge checkpoints "
                            "of the same model saved in the same dtype")


def _lerp(x: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    # Accumulate in at least float32 so that bf16/fp16 weights do not lose the small difference.
    acc = torch.promote_types(x.dtype, torch.float32)
    return (alpha * x.to(acc) + (1.0 - alpha) * y.to(acc)).to(x.dtype).contiguous()


def merge_state_dicts(sd_a: dict, sd_b: dict, alpha: float = 0.5) -> dict:
    """Linear merge of two state dicts: ``alpha * a + (1 - alpha) * b`` for every float tensor.

    Parameters
    ----------
    sd_a, sd_b : dict of str -> torch.Tensor
        Same keys, shapes and dtypes (else `UserError`).
    alpha : float
        Weight of ``sd_a``, in [0, 1]; 0.5 is paper 1's two-point average.

    Returns
    -------
    dict
        New tensors, in ``sd_a``'s dtype. Non-float tensors (integer buffers, masks) are
        copied from ``sd_a``.
    """
    alpha = _check_alpha(alpha)
    _check_same_tensors(sd_a, sd_b)
    return {k: _lerp(v, sd_b[k], alpha) if v.is_floating_point() else v.clone()
            for k, v in sd_a.items()}


def merge_lora_concat(sd_a: dict, sd_b: dict, alpha: float = 0.5) -> dict:
    """Exact merge of two LoRA adapter state dicts by stacking them along the rank.

    ``A' = cat(A_a, A_b)`` along the rank (dim 0), ``B' = cat(alpha B_a, (1-alpha) B_b)`` along
    the rank (dim 1), so ``B'A' = alpha B_a A_a + (1-alpha) B_b A_b``. Other tensors (biases,
    modules_to_save) are merged linearly. The caller must double ``r`` and rescale
    ``lora_alpha`` in adapter_config.json (`merge_checkpoints` does).
    """
    alpha = _check_alpha(alpha)
    _check_same_tensors(sd_a, sd_b)
    out = {}
    for k, a in sd_a.items():
        b = sd_b[k]
        if k.endswith(_A_SUFFIXES):
            out[k] = torch.cat([a, b], dim=0).contiguous()                        # (2r, ...)
        elif k.endswith(_B_SUFFIXES):
            acc = torch.promote_types(a.dtype, torch.float32)
            out[k] = torch.cat([alpha * a.to(acc), (1 - alpha) * b.to(acc)],
                               dim=1).to(a.dtype).contiguous()                    # (out, 2r, ...)
        elif a.is_floating_point():
            out[k] = _lerp(a, b, alpha)
        else:
            out[k] = a.clone()
    if not any(k.endswith(_A_SUFFIXES) for k in out):
        raise UserError("no LoRA factors (lora_A / lora_B) in the adapter; use "
                        "lora_method='linear' for other adapter types")
    return out


def checkpoint_kind(folder: str | os.PathLike) -> str:
    """'full' or 'lora', from the files in ``folder``; `UserError` when neither."""
    d = Path(folder)
    if not d.is_dir():
        raise UserError(f"checkpoint folder {d} does not exist")
    if (d / ADAPTER_FILE).is_file():
        if not (d / ADAPTER_CONFIG).is_file():
            raise UserError(f"{d} has {ADAPTER_FILE} but no {ADAPTER_CONFIG}; copy the adapter "
                            "config from the run")
        return "lora"
    if (d / FULL_FILE).is_file():
        return "full"
    if (d / f"{FULL_FILE}.index.json").is_file():
        raise UserError(f"{d} holds a sharded model; save it unsharded (save_pretrained(..., "
                        "max_shard_size='100GB')) to merge it")
    raise UserError(f"{d} holds neither {FULL_FILE} nor {ADAPTER_FILE} + {ADAPTER_CONFIG}")


def _concat_config(cfg: dict) -> dict:
    if cfg.get("peft_type", "LORA") != "LORA":
        raise UserError(f"lora_method='concat' needs a LoRA adapter, got {cfg.get('peft_type')}; "
                        "use lora_method='linear'")
    if cfg.get("use_dora"):
        raise UserError("DoRA adapters cannot be merged exactly by concatenation (the magnitude "
                        "vector normalizes the sum); use lora_method='linear'")
    factor = math.sqrt(2.0) if cfg.get("use_rslora") else 2.0   # keeps lora_alpha / r (or sqrt r)
    new = dict(cfg)
    new["r"] = 2 * int(cfg["r"])
    new["lora_alpha"] = cfg["lora_alpha"] * factor
    new["rank_pattern"] = {k: 2 * int(v) for k, v in (cfg.get("rank_pattern") or {}).items()}
    new["alpha_pattern"] = {k: v * factor for k, v in (cfg.get("alpha_pattern") or {}).items()}
    return new


def merge_checkpoints(dir_a, dir_b, out_dir, alpha: float = 0.5, *,
                      lora_method: str = "concat") -> Path:
    """Merge two checkpoint folders into a new folder ``out_dir`` (see the module docstring).

    Parameters
    ----------
    dir_a, dir_b : path
        Checkpoints of one run, both full or both LoRA.
    out_dir : path
        Must not exist yet.
    alpha : float
        Weight of ``dir_a`` in [0, 1].
    lora_method : {"concat", "linear"}, keyword-only
        How to merge LoRA factors; ignored for full checkpoints.

    Returns
    -------
    Path of the merged folder.
    """
    from safetensors.torch import load_file, save_file

    alpha = _check_alpha(alpha)
    a, b, out = Path(dir_a), Path(dir_b), Path(out_dir)
    if out.exists():
        raise UserError(f"{out} already exists; choose a new folder for the merged checkpoint")
    kind_a, kind_b = checkpoint_kind(a), checkpoint_kind(b)
    if kind_a != kind_b:
        raise UserError(f"cannot merge a {kind_a} checkpoint ({a}) with a {kind_b} one ({b}); "
                        "merge two checkpoints of the same run")
    if lora_method not in ("concat", "linear"):
        raise UserError(f"lora_method must be 'concat' or 'linear', got {lora_method!r}",
                        field="lora_method")

    weights = ADAPTER_FILE if kind_a == "lora" else FULL_FILE
    sd_a, sd_b = load_file(str(a / weights)), load_file(str(b / weights))
    record = {"kind": kind_a, "alpha": alpha, "a": str(a.resolve()), "b": str(b.resolve()),
              "formula": f"{alpha:g} * a + {1 - alpha:g} * b"}
    adapter_cfg = None
    if kind_a == "lora":
        cfg_a, cfg_b = (json.loads((d / ADAPTER_CONFIG).read_text()) for d in (a, b))
        diff = sorted(k for k in set(cfg_a) | set(cfg_b) if k not in _CONFIG_KEYS_IGNORED
                      and cfg_a.get(k) != cfg_b.get(k))
        if diff:
            raise UserError(f"the adapters were trained with different settings ({diff}); "
                            "merge two checkpoints of the same run")
        if lora_method == "concat":
            merged = merge_lora_concat(sd_a, sd_b, alpha)
            adapter_cfg = _concat_config(cfg_a)
            record.update(method="lora_concat", rank={"a": cfg_a["r"], "merged": adapter_cfg["r"]})
        else:
            merged = merge_state_dicts(sd_a, sd_b, alpha)
            adapter_cfg = cfg_a
            record["method"] = "lora_linear_factors"
            record["note"] = "factors averaged separately: not the average of the two models"
    else:
        merged = merge_state_dicts(sd_a, sd_b, alpha)
        record["method"] = "linear"

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        save_file(merged, str(tmp / weights), metadata={"format": "pt"})
        copied = []
        for name in SMALL_FILES:
            if (a / name).is_file():
                shutil.copy2(a / name, tmp / name)
                copied.append(name)
        if adapter_cfg is not None:
            (tmp / ADAPTER_CONFIG).write_text(json.dumps(adapter_cfg, indent=2) + "\n")
            copied.append(ADAPTER_CONFIG)
        if (a / "config.json").is_file() and (b / "config.json").is_file() and \
                json.loads((a / "config.json").read_text()) != \
                json.loads((b / "config.json").read_text()):
            warnings.warn(f"config.json differs between {a} and {b}; the merged folder uses a's",
                          stacklevel=2)
        record["files"] = [weights] + copied
        (tmp / "merge.json").write_text(json.dumps(record, indent=2) + "\n")
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
