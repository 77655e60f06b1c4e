"""Fine-tuning methods: which weights train.

Usage:
    model = apply_method(model, cfg.training)     # full | lora | head

- `full`: every weight trains.
- `lora`: peft LoRA adapters (`LoraConfig` + `get_peft_model`); only the adapters train.
  `target_modules: default` means the attention and MLP projections of Llama-style models
  (q,k,v,o,gate,up,down), and for other architectures peft's own default for the model type
  (GPT-2: c_attn; GPT-NeoX: query_key_value); `all-linear` is passed to peft as is; a list
  names modules by their last name component(s), e.g. `[q_proj, v_proj]`.
- `head`: only the output head (`lm_head`) trains. A head tied to the input embeddings is
  untied first (the weight is cloned), so the embeddings stay as they were.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from finemem.errors import UserError
from finemem.models.load import untie_head

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                        "down_proj")


def _is_linear(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return type(module).__name__ == "Conv1D"  # GPT-2 style projections (transformers Conv1D)


def linear_module_names(model: nn.Module) -> list[str]:
    """Sorted last name components of the model's linear layers, e.g. ['down_proj', 'lm_head']."""
    return sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                   if name and _is_linear(mod)})


def _matches(full_name: str, target: str) -> bool:
    # peft's rule for a list of names: exact key or a dotted suffix of it.
    return full_name == target or full_name.endswith("." + target)


def resolve_lora_targets(model: nn.Module, targets) -> list[str] | str:
    """Check LoRA targets against the model; return what `LoraConfig(target_modules=)` gets.

    Raises `UserError` naming a target the model lacks and listing the model's linear modules.
    """
    if targets == "all-linear":
        return "all-linear"
    linear = [n for n, m in model.named_modules() if n and _is_linear(m)]
    names = _default_targets(model, linear) if targets == "default" else list(targets)
    if not names:
        raise UserError("no LoRA target modules given; use 'default', 'all-linear' or a list",
                        field="training.lora.target_modules")
    for t in names:
        if not any(_matches(n, t) for n in linear):
            hint = (" ('default' covers Llama-style models and the architectures peft "
                    "knows; try 'all-linear')") if targets == "default" else ""
            raise UserError(f"the model has no linear module '{t}'{hint}; its linear modules "
                            f"are: {', '.join(linear_module_names(model))}",
                            field="training.lora.target_modules")
    return names


def _default_targets(model: nn.Module, linear: list[str]) -> list[str]:
    """Llama-style projections when the model has them all, else peft's default targets for
    the model type when it names one (peft applies the same table when given none)."""
    if all(any(_matches(n, t) for n in linear) for t in DEFAULT_LORA_TARGETS):
        return list(DEFAULT_LORA_TARGETS)
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return list(PEFT_DEFAULTS.get(model_type, DEFAULT_LORA_TARGETS))


def output_head_name(model: nn.Module) -> str:
    """Parameter name of the output head weight, e.g. 'lm_head.weight'."""
    head = model.get_output_embeddings()
    if head is None:
        raise UserError("the model has no output head (get_output_embeddings() is None); "
                        "use method full or lora", field="training.method")
    for name, mod in model.named_modules():
        if mod is head:
            return f"{name}.weight"
    raise UserError("cannot locate the output head in the model", field="training.method")


def apply_method(model: nn.Module, training) -> nn.Module:
    """Make the weights of `training.method` trainable; returns the (possibly wrapped) model.

    Parameters
    ----------
    model : a transformers causal LM
    training : `finemem.config.TrainingConfig`
    """
    model = _apply(model, training)
    if getattr(training, "gradient_checkpointing", False):
        enable_checkpointing(model, lora=training.method == "lora")
    return model


def enable_checkpointing(model: nn.Module, *, lora: bool) -> None:
    """Hugging Face gradient checkpointing (non-reentrant: frozen inputs still get gradients
    through the recomputed layers; the RNG state is replayed, so dropout masks match). With
    LoRA the frozen embeddings' output is made to require grad (peft's input-grad hook), so
    the checkpointed layers see an input that needs a gradient."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise UserError(f"{type(base).__name__} does not support gradient checkpointing; set "
                        "training.gradient_checkpointing: false",
                        field="training.gradient_checkpointing")
    _quiet_cache_warning()
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # the name from transformers 5.x on
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if lora:
        model.enable_input_require_grads()


class _NoCacheNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "incompatible with gradient checkpointing" not in record.getMessage()


def _quiet_cache_warning() -> None:
    """transformers turns the (unused) KV cache off itself in a checkpointed training forward
    and says so; the note is not the user's to act on."""
    log = logging.getLogger("transformers.utils.generic")
    if not any(isinstance(f, _NoCacheNote) for f in log.filters):
        log.addFilter(_NoCacheNote())


def _apply(model: nn.Module, training) -> nn.Module:
    method = training.method
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if method == "head":
        untie_head(model)
        name = output_head_name(model)
        for n, p in model.named_parameters():
            p.requires_grad_(n == name)
        return model
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        lc = training.lora
        targets = resolve_lora_targets(model, lc.target_modules)
        # GPT-2-style Conv1D stores its weight transposed; peft would warn and flip the flag
        hit = [m for n, m in model.named_modules() if n and _is_linear(m) and
               (targets == "all-linear" or any(_matches(n, t) for t in targets))]
        conv1d = bool(hit) and all(type(m).__name__ == "Conv1D" for m in hit
                                   if m is not model.get_output_embeddings())
        config = LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
                            target_modules=targets, task_type="CAUSAL_LM",
                            fan_in_fan_out=conv1d)
        with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            return get_peft_model(model, config)
    raise UserError(f"unknown method '{method}'; expected full, lora or head",
                    field="training.method")


def trainable_parameters(model: nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices, none on biases and norm weights (as HF Trainer does)."""
    named = trainable_parameters(model)
    decay = [p for _, p in named if p.ndim >= 2]
    no_decay = [p for _, p in named if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups
