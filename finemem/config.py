"""Run configuration: one YAML file, validated by pydantic at the door.

Usage:
    cfg = load_config("run.yaml", overrides={"training.lr": 1e-3})

Unknown keys are errors. Errors name the file, the line and the field (`UserError`).
`finemem config example` prints a commented example (finemem/configs/example.yaml).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from finemem.errors import UserError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSource(_Strict):
    source: str = Field(description="'builtin:<task>' or a JSONL/CSV/Parquet file, a datasets "
                                    "save_to_disk folder, or a hub dataset id")
    split: str = Field("train", description="split of a builtin task or hub/disk dataset")
    n: int | None = Field(None, gt=0, description="keep the first n examples (None = all)")
    seed: int = Field(0, description="seed of a builtin task's generator")
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="a builtin task's generator options, e.g. "
                                                "{pair_frac: 0.0} for arith")
    fields: dict[str, str] = Field(default_factory=dict,
                                   description="map finemem field -> your column, e.g. "
                                               "{prompt: question, completion: answer}")


class Duplication(_Strict):
    fraction: float = Field(0.0, ge=0.0, le=1.0,
                            description="fraction of training examples to repeat")
    times: int = Field(1, ge=1, description="how many times each chosen example is seen per epoch")
    seed: int = Field(0, description="which examples are chosen")


class DataConfig(_Strict):
    train: DataSource
    eval: dict[str, DataSource] = Field(default_factory=dict,
                                        description="named evaluation sets, e.g. test, ood")
    duplication: Duplication = Field(default_factory=Duplication)
    max_length: int = Field(512, gt=8, description="longest tokenized sequence kept")
    loss_on: Literal["completion", "all"] = Field(
        "completion", description="train (and score) the completion only, or the whole sequence")


class LoraSettings(_Strict):
    r: int = Field(16, gt=0)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["default", "all-linear"] = Field(
        "default", description="'default' = attention + MLP projections of Llama-style models; "
                               "'all-linear'; or a list of module names")


class TrainingConfig(_Strict):
    method: Literal["full", "lora", "head"] = "full"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    epochs: int = Field(3, gt=0, description="passes over the training set")
    max_steps: int | None = Field(None, gt=0, description="stop after this many optimizer steps")
    lr: float = Field(1e-4, gt=0)
    scheduler: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(16, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    seed: int = 0
    loss: Literal["ce", "mar"] = Field(
        "ce", description="'mar': memorization-aware reweighting, sum_t (1 - p_t) * CE_t")
    mar_detach: bool = Field(True, description="detach the MAR weight (1 - p_t) from the graph")
    save_every: Literal["epoch"] | int = Field(
        "epoch", description="'epoch' or a number of optimizer steps; all checkpoints are kept")


class AuditConfig(_Strict):
    """What `finemem audit` computes per checkpoint (over-memorization audit)."""
    train_sample: int = Field(200, gt=0, description="training examples scored for train PPL")
    answer_extractor: Literal["hash", "last_number", "boxed", "regex", "first_line"] = "hash"
    answer_regex: str | None = None
    max_new_tokens: int = Field(96, gt=0)
    diversity_prompts: int = Field(64, ge=0, description="test prompts sampled for diversity")
    k_samples: int = Field(8, gt=1, description="samples per prompt for pass@k and diversity")
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1.0)
    embedding_dispersion: bool = Field(True, description="MiniLM dispersion of samples")
    underfit_frac: float = Field(0.5, gt=0, le=1)
    delta: float = Field(0.05, ge=0, le=1, description="accuracy tolerance below the best")
    tau: float = Field(0.3, gt=0, description="PPL rise over its running minimum")
    min_consecutive: int = Field(1, ge=1)


class RunConfig(_Strict):
    run_dir: str = Field(description="folder holding everything this run produces")
    model: str = Field("builtin:tiny", description="'builtin:test|tiny|small|base', a local "
                                                   "Hugging Face folder or a hub id")
    trust_remote_code: bool = False
    allow_pickle: bool = Field(False, description="allow loading pickled (.bin) weights")
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = float32 on CPU, the model's own on GPU")
    data: DataConfig
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)

    def digest(self, *, exclude_run_dir: bool = True) -> str:
        """Hash of everything that changes what training produces."""
        d = self.model_dump(mode="json")
        if exclude_run_dir:
            d.pop("run_dir")
        d.pop("audit", None)  # auditing settings do not change the checkpoints
        d["data"].pop("eval", None)  # nor do the evaluation sets
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _key_line(text: str, loc: tuple) -> int | None:
    """Line (1-based) of the YAML key at `loc`, or of its nearest existing parent."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for key in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        for k, v in node.value:
            if k.value == str(key):
                line, node = k.start_mark.line + 1, v
                break
        else:
            break
    return line


def set_path(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise UserError(f"cannot set '{dotted}': '{k}' is not a section", field=dotted)
    d[keys[-1]] = value


def parse_config(raw: dict, *, source: str = "<config>", text: str = "") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(str(x) for x in err["loc"])
        field = ".".join(loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "missing required key"
        else:
            msg = f"{msg} (got {err.get('input')!r})"
        line = _key_line(text, loc) if text else None
        more = f" (and {len(e.errors()) - 1} more problem(s))" if len(e.errors()) > 1 else ""
        raise UserError(msg + more, source=source, row=line, field=field) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise UserError("config file not found", source=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"not UTF-8 (byte {e.start})", source=str(path)) from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise UserError(f"invalid YAML: {getattr(e, 'problem', e)}", source=str(path),
                        row=mark.line + 1 if mark else None) from None
    if not isinstance(raw, dict):
        raise UserError("the config must be a mapping of keys", source=str(path))
    for k, v in (overrides or {}).items():
        set_path(raw, k, v)  # None is a real value here (e.g. --set training.max_steps=null)
    cfg = parse_config(raw, source=str(path), text=text)
    return cfg
