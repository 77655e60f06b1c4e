"""Resolve and load models and tokenizers, safely.

Usage:
    path = resolve_model("builtin:tiny")          # builds and caches the base model if needed
    tok = load_tokenizer(path)
    model = load_model(path, device="auto", dtype="auto")

A model is 'builtin:<size>', a named real model ('smollm2-135m', `finemem models get`), a .gguf
file (or a folder holding one; converted once, `finemem.models.gguf`), a local Hugging Face
folder, or a hub id. Weights are read from safetensors only and remote code is refused, unless
the caller allows them.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError

from finemem.errors import UserError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model",
                   "tokenizer_config.json")


@contextmanager
def peft_quiet():
    """Hide a deprecation warning that peft triggers inside transformers when it wraps or
    loads adapters (not the user's to fix)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                category=FutureWarning)
        yield


def resolve_model(spec: str) -> str:
    """Return a local folder or hub id for `spec`; 'builtin:<size>' is built on first use."""
    from finemem.models.base import build_base, parse_builtin

    from finemem.models.gguf import convert_gguf, find_gguf
    from finemem.models.named import NAMED, named_folder

    size = parse_builtin(spec)  # raises on an unknown size
    if size is not None:
        return str(build_base(size))
    if spec in NAMED:
        return str(named_folder(spec))
    gguf = find_gguf(spec)
    if gguf is not None:
        return str(convert_gguf(gguf))
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError("not a Hugging Face model folder (no config.json) nor a .gguf "
                            "file or a folder holding one", source=spec, field="model")
        return str(path)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or spec.endswith(".gguf"):
        raise UserError("model folder or file not found", source=spec, field="model")
    return spec  # a hub id; loading it needs the network or the local HF cache


DEVICES = ("auto", "cpu", "cuda", "mps")


def pick_device(device: str = "auto") -> torch.device:
    if str(device).split(":")[0] not in DEVICES:
        raise UserError(f"unknown device '{device}'; use one of {', '.join(DEVICES)}",
                        field="device")
    if device != "auto":
        if device == "cuda" and not torch.cuda.is_available():
            raise UserError("device 'cuda' asked for but CUDA is not available", field="device")
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.float32  # CPU and a safe default; ask for bf16/fp16 on GPU explicitly
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_tokenizer(spec: str, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = Path(spec)
    if path.is_dir() and not any((path / f).exists() for f in TOKENIZER_FILES):
        raise UserError("model folder has no tokenizer (expected tokenizer.json or "
                        "tokenizer_config.json)", source=spec, field="model")
    try:
        tok = AutoTokenizer.from_pretrained(spec, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load tokenizer: {str(e).splitlines()[0]}", source=spec,
                        field="model") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # batching needs a pad id; masks keep it out of scores
    return tok


def pad_id(tokenizer) -> int:
    """The id that batches are padded with: the tokenizer's pad token, else its eos token (the
    pad `load_tokenizer` sets), else 0. Padded positions are masked or ignored, so the choice
    changes no result; every padding caller (training batches, generation) asks here."""
    for tid in (getattr(tokenizer, "pad_token_id", None),
                getattr(tokenizer, "eos_token_id", None)):
        if tid is not None:
            return int(tid)
    return 0


def load_model(spec: str, *, device: str | torch.device = "auto", dtype: str = "auto",
               trust_remote_code: bool = False, allow_pickle: bool = False):
    from transformers import AutoModelForCausalLM

    path = Path(spec)
    if path.is_dir() and not allow_pickle:
        has_st = any(path.glob("*.safetensors"))
        has_pickle = any(path.glob("*.bin")) or any(path.glob("*.pt"))
        if not has_st and has_pickle:
            raise UserError("model has only pickled weights (.bin); convert it to safetensors "
                            "or set allow_pickle: true if you trust it", source=spec,
                            field="model")
    dev = device if isinstance(device, torch.device) else pick_device(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            spec, dtype=pick_dtype(dtype, dev), trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True)
    except (OSError, ValueError, SafetensorError) as e:
        raise UserError(f"cannot load model: {str(e).splitlines()[0]}", source=spec,
                        field="model") from None
    return model.to(dev)


def untie_head(model) -> bool:
    """Give the output head its own copy of a weight it shares with the input embeddings, so
    that training or swapping the head leaves the embeddings as they were (head fine-tuning
    and the engine's head swaps both call this).

    Returns True when the head was tied (and is now untied).
    """
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or emb is None or head.weight is not emb.weight:
        return False
    head.weight = torch.nn.Parameter(head.weight.detach().clone())
    model.config.tie_word_embeddings = False  # so a later tie_weights() does not re-tie them
    if hasattr(model.config, "get_text_config"):
        model.config.get_text_config().tie_word_embeddings = False
    return True


DEFAULT_MAX_LENGTH = 512  # data.max_length when unset, for a model with a longer context


def model_positions(model_or_config) -> int | None:
    """The most positions a model takes (its config's max_position_embeddings, n_positions or
    n_ctx), None when the config does not say. Takes a model or its config."""
    conf = getattr(model_or_config, "config", model_or_config)
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        v = getattr(conf, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def max_length_for(configured: int | None, positions: int | None) -> int:
    """data.max_length as used: the configured value, else the model's context capped at
    DEFAULT_MAX_LENGTH.

    >>> max_length_for(None, 256), max_length_for(None, 2048), max_length_for(96, 256)
    (256, 512, 96)
    """
    if configured is not None:
        return configured
    return min(positions, DEFAULT_MAX_LENGTH) if positions else DEFAULT_MAX_LENGTH


def run_max_length(cfg) -> int:
    """data.max_length of a run config as training used it (reads the base model's config,
    not its weights)."""
    if cfg.data.max_length is not None:
        return cfg.data.max_length
    from transformers import AutoConfig

    try:
        conf = AutoConfig.from_pretrained(resolve_model(cfg.model),
                                          trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError):
        conf = None
    return max_length_for(None, model_positions(conf) if conf is not None else None)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


@contextmanager
def quiet_hf():
    """Silence transformers' tqdm bars (weight loading, shard writing) inside our own bar, and
    peft's deprecation noise."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with peft_quiet():
            yield
    finally:
        if was:
            hf_logging.enable_progress_bar()
