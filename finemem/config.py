"""Run configuration: one YAML file, validated by pydantic at the door.

Usage:
    cfg = load_config("run.yaml", overrides={"training.lr": 1e-3})

Unknown keys are errors. Errors name the file, the line and the field (`UserError`). Each
`audit: {<probe>: ...}` section is validated by that probe's settings model, which the probe
registers in `PROBE_SETTINGS` (this module knows no probe): call
`finemem.audit.probes.load_probes()` first, as the CLI and `finemem.train` do.
`finemem config example` prints a commented example generated from these models (every field's
default and `description`; finemem/cli/config_example.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag,
                      ValidationError, field_validator, model_validator)
from pydantic_core import InitErrorDetails

from finemem.errors import UserError, unknown_name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class HoldOut(_Strict):
    """Split one data file in two: `split: {test: 0.15, seed: 0}`. The held-out share (whole
    prompts, chosen by a seeded hash of the prompt text, so stable) never shares a prompt with
    the rest. `data.train` reads the rest; when `data.eval` has no `test`, the held-out share
    becomes the test set. An eval source reads it explicitly with `part: test`."""
    test: float = Field(gt=0.0, lt=1.0, description="share of the examples held out, e.g. 0.15")
    seed: int = Field(0, description="which examples are held out")
    part: Literal["train", "test"] = Field(
        "train", description="which part this source reads: 'train' = the rest (what "
                             "data.train uses), 'test' = the held-out share")


def _split_kind(v: Any) -> str:
    return "holdout" if isinstance(v, (dict, HoldOut)) else "name"


class DataSource(_Strict):
    source: str = Field(description="'builtin:<task>' or a JSONL/CSV/Parquet file, a datasets "
                                    "save_to_disk folder, or a hub dataset id")
    split: Annotated[Union[Annotated[str, Tag("name")], Annotated[HoldOut, Tag("holdout")]],
                     Discriminator(_split_kind)] = Field(
        "train", description="split of a builtin task or hub/disk dataset, or "
                             "{test: 0.15, seed: 0} to hold out part of one file")
    n: int | None = Field(None, gt=0, description="keep the first n examples (None = all)")
    seed: int = Field(0, description="seed of a builtin task's generator")
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="a builtin task's generator options, e.g. "
                                                "{pair_frac: 0.0} for arith")
    fields: dict[str, str] = Field(default_factory=dict,
                                   description="map finemem field -> your column, e.g. "
                                               "{prompt: question, completion: answer}")
    # data.format of the config this source belongs to (DataConfig sets it; not stored here)
    _format: str = PrivateAttr("auto")

    @model_validator(mode="wrap")
    @classmethod
    def _split_locs(cls, data: Any, handler):
        """Report `split.test`, not pydantic's `split.holdout.test` (the union's tag)."""
        try:
            return handler(data)
        except ValidationError as e:
            errors = []
            for er in e.errors():
                loc = er["loc"]
                if loc[:1] == ("split",) and loc[1:2] in (("name",), ("holdout",)):
                    loc = loc[:1] + loc[2:]
                errors.append(InitErrorDetails(type=er["type"], loc=loc, input=er.get("input"),
                                               ctx=er.get("ctx", {})))
            raise ValidationError.from_exception_data(cls.__name__, errors) from None

    def resolved(self) -> "DataSource":
        """This source with a local path made absolute (against the current directory)."""
        from finemem.data.loaders import _looks_local

        if self.source.startswith("builtin:") or not _looks_local(self.source):
            return self
        return self.model_copy(update={"source": str(Path(self.source).expanduser().resolve())})


class Duplication(_Strict):
    fraction: float = Field(0.0, ge=0.0, le=1.0,
                            description="fraction of training examples to repeat")
    times: int = Field(1, ge=1, description="how many times each chosen example is seen per epoch")
    seed: int = Field(0, description="which examples are chosen")


class Canaries(_Strict):
    """Secrets planted in the training data (`finemem canaries add`; see docs/MEMBERSHIP.md):
    per family and tier, `per_tier` canaries each seen `tier` times per epoch, and `twins`
    never-inserted controls per family drawn the same way."""
    families: list[Literal["random", "record", "highppl"]] = Field(
        ["random", "record", "highppl"], min_length=1,
        description="random-token sequences, structured records (name, number, code), text "
                    "of high perplexity under the base model")
    tiers: list[int] = Field([1, 4, 16], min_length=1,
                             description="times per epoch each canary of a tier is seen")
    per_tier: int = Field(4, gt=0, description="canaries per family and tier")
    twins: int = Field(100, gt=0, description="never-inserted controls per family (>= 100 for "
                                              "a TPR at 1% FPR)")
    length: int = Field(8, gt=1, le=64, description="secret length in words / tokens")
    seed: int = Field(0, description="which canaries are drawn")
    # issue 21 hook: the one-run privacy audit's design (finemem/metrics/privacy_audit.py)
    inclusion: Literal["tiers", "half"] = Field(
        "tiers", description="'tiers': per_tier canaries per tier are inserted and the twins "
        "never; 'half': each of the per_tier * len(tiers) + twins candidates per family is "
        "inserted with probability 1/2 (seeded; tiers assigned in turn), the design of the "
        "one-run privacy audit (an epsilon lower bound)")

    @field_validator("tiers", "families")
    @classmethod
    def _no_repeats(cls, v: list, info):
        bad = [t for t in v if isinstance(t, int) and t <= 0]
        if bad:
            raise ValueError(f"every tier is a repeat count >= 1; got {bad[0]}")
        if len(set(v)) != len(v):
            raise ValueError(f"{info.field_name} must not repeat")
        return v


class DataConfig(_Strict):
    train: DataSource = Field(description="the training set")
    eval: dict[str, DataSource] = Field(
        default_factory=dict, description="named evaluation sets: 'test' (required by the "
        "audit), 'ood', 'test_<variant>' (robustness variants of test), any other name")
    duplication: Duplication = Field(default_factory=Duplication,
                                     description="for memorization studies: repeat some "
                                                 "examples")
    canaries: Canaries | None = Field(None, description="secrets planted in the training data "
                                                       "(`finemem canaries add`)")
    # --- issue 21 hook: deduplication (finemem/data/dedup.py) ---
    dedup: Literal["none", "exact", "near"] = Field(
        "none", description="remove repeated training texts before training (after "
        "data.duplication, before canaries): 'exact' by normalized hash, 'near' also by "
        "MinHash LSH over character 5-grams")
    dedup_threshold: float = Field(0.8, gt=0.0, lt=1.0, description="near: Jaccard similarity "
                                   "at and above which two texts are duplicates")
    # --- end issue 21 hook ---
    max_length: int | None = Field(
        None, gt=8, description="longest tokenized sequence kept (default: the model's "
        "context, at most 512 tokens)")
    loss_on: Literal["completion", "all"] = Field(
        "completion", description="train (and score) the completion only, or the whole sequence")
    format: Literal["auto", "chat", "plain"] = Field(
        "auto", description="'chat': every row (prompt/completion or messages) is a conversation "
                            "rendered with the tokenizer's chat template, loss on the "
                            "assistant's turn; 'auto': only a messages column is; 'plain': "
                            "never the template")

    @model_validator(mode="after")
    def _pass_format(self) -> "DataConfig":
        for src in (self.train, *self.eval.values()):
            src._format = self.format
        return self

    def resolved(self) -> "DataConfig":
        """This data config with local paths made absolute."""
        return self.model_copy(update={
            "train": self.train.resolved(),
            "eval": {k: v.resolved() for k, v in self.eval.items()}})


class LoraSettings(_Strict):
    r: int = Field(16, gt=0, description="rank of the low-rank update")
    alpha: float = Field(32.0, gt=0, description="scaling: the update is multiplied by alpha / r")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="dropout on the LoRA input")
    target_modules: list[str] | Literal["default", "all-linear"] = Field(
        "default", description="'default' = attention + MLP projections of Llama-style models "
                               "(other architectures: peft's default for the model type, e.g. "
                               "GPT-2 c_attn); 'all-linear'; or a list of module names")


class DPSettings(_Strict):
    """Differentially private fine-tuning with Opacus (DP-SGD; finemem/train/dp.py)."""
    epsilon: float = Field(8.0, gt=0, description="target epsilon at the end of training; the "
                           "noise multiplier is calibrated to reach it")
    delta: Literal["auto"] | float = Field(
        "auto", description="target delta; 'auto' = 1 / (10 n), n = training rows")
    max_grad_norm: float = Field(1.0, gt=0, description="per-sample gradient clipping norm")
    accountant: Literal["prv", "rdp", "gdp"] = Field("prv", description="Opacus accountant")

    @field_validator("delta")
    @classmethod
    def _delta(cls, v):
        if not isinstance(v, str) and not 0 < v < 1:
            raise ValueError("delta must be 'auto' or a number between 0 and 1 (e.g. 1e-5)")
        return v


class TrainingConfig(_Strict):
    method: Literal["full", "lora", "head"] = Field(
        "full", description="full | lora | head (the output head only)")
    lora: LoraSettings = Field(default_factory=LoraSettings,
                               description="used when method is lora")
    epochs: int = Field(3, gt=0, description="passes over the training set")
    max_steps: int | None = Field(None, gt=0, description="stop after this many optimizer steps")
    lr: float = Field(1e-4, gt=0, description="peak learning rate (AdamW)")
    scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="constant | linear | cosine (after the warm-up)")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up before the schedule")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    batch_size: int = Field(16, gt=0, description="examples per micro-batch")
    grad_accum: int = Field(1, gt=0, description="micro-batches per optimizer step")
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping (null = off)")
    seed: int = Field(0, description="data order, initialisation of LoRA, dropout")
    loss: Literal["ce", "mar"] = Field(
        "ce", description="'mar': memorization-aware reweighting, sum_t (1 - p_t) * CE_t")
    mar_detach: bool = Field(True, description="detach the MAR weight (1 - p_t) from the graph")
    save_every: Literal["epoch"] | int = Field(
        "epoch", description="'epoch' or a number of optimizer steps; all checkpoints are kept")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        "no", description="autocast the forward pass (accelerate's mixed precision; fp16 needs a "
                          "GPU); the loss and the audit's scores are reduced in float32")
    report_to: list[str] = Field(
        default_factory=list, description="trackers the training loss and, with "
        "stop_after_overmemorized, each checkpoint's audit metrics are logged to (accelerate's: "
        "tensorboard, wandb, mlflow, ...); logs go to RUN_DIR/logs")
    stop_after_overmemorized: int | None = Field(
        None, gt=0, description="audit each checkpoint as it is saved and stop training after "
        "this many consecutive over-memorized checkpoints (the stage rule, applied online)")
    compile: bool = Field(False, description="torch.compile the model (accelerate's dynamo "
                                             "backend 'inductor')")
    # issue 21 hook: DP-SGD (finemem/train/dp.py)
    dp: DPSettings | None = Field(None, description="train with differential privacy (Opacus "
                                  "DP-SGD, Poisson sampling); None = no DP")
    gradient_checkpointing: bool = Field(
        False, description="recompute each layer's activations in the backward pass instead of "
                           "keeping them (Hugging Face's; less memory, ~30% more compute, the "
                           "same weights)")


class Section(_Strict):
    """Base of a probe's config section, `audit: {<probe>: {...}}`; each probe module defines
    one (see `finemem.audit.probes`)."""


# Probe name -> the model of its `audit:` section. This layer knows what an audit section is,
# not which probes exist: `finemem.audit.probes.register_probe` files each probe's Config here
# and `load_probes()` registers them all; whoever parses a whole config from outside (the CLI,
# finemem.train, the audit loop, the experiments, FinememCallback) loads the probes first.
PROBE_SETTINGS: dict[str, type[Section]] = {}
_probes_loaded = False


def register_probe_settings(name: str, settings: type[Section]) -> None:
    PROBE_SETTINGS[name] = settings


def probe_settings_loaded() -> None:
    """Called by `finemem.audit.probes.load_probes` once every probe is registered."""
    global _probes_loaded
    _probes_loaded = True


def probe_settings() -> dict[str, type[Section]]:
    """Every probe's settings model; a programming error before the probes are loaded (an
    audit section would otherwise read as an unknown key)."""
    if not _probes_loaded:
        raise RuntimeError("the probes' settings are not registered: call "
                           "finemem.audit.probes.load_probes() before parsing a run config")
    return PROBE_SETTINGS


# Flat audit keys of run folders written before the audit had one section per probe; they are
# read into the section that now holds them.
_LEGACY_AUDIT_KEYS = {"train_sample": "likelihood"} | {
    k: "overmem" for k in ("answer_extractor", "answer_regex", "max_new_tokens",
                           "diversity_prompts", "k_samples", "temperature", "top_p",
                           "embedding_dispersion", "underfit_frac", "delta", "tau",
                           "min_consecutive")}


class AuditConfig(BaseModel):
    """What `finemem audit` runs: the probes, and one section of settings per probe."""
    model_config = ConfigDict(extra="allow", validate_assignment=False)

    probes: list[str] | None = Field(
        None, description="probes `finemem audit` runs on every checkpoint (None = the default "
                          "ones); `finemem audit --probes a,b` overrides it")
    nonmembers: DataSource | None = Field(
        None, description="examples the run never trained on, for the probes that compare "
                          "members with non-members (None = the 'test' eval set)")
    workers: int = Field(1, ge=1, description="processes the checkpoints are split over (each "
                                              "with its share of the CPU threads); results "
                                              "equal up to float summation order")
    share_passes: bool | None = Field(
        None, description="score the texts the probes ask for once per checkpoint, each cut "
                          "read off one pass (None = for models with an output head of >= "
                          "16,384 words, where a pass is costly; equal up to float summation "
                          "order)")

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key, probe in _LEGACY_AUDIT_KEYS.items():
            if key in data and isinstance(data.setdefault(probe, {}), dict):
                data[probe] = {key: data.pop(key), **data[probe]}
        return data

    @model_validator(mode="after")
    def _sections(self) -> "AuditConfig":
        settings = probe_settings()
        extra = self.__pydantic_extra__
        errors = []
        for name in list(extra):
            if name not in settings:
                errors.append(InitErrorDetails(type="extra_forbidden", loc=(name,),
                                               input=extra[name]))
                continue
            try:
                extra[name] = settings[name].model_validate(extra[name] or {})
            except ValidationError as e:
                errors += [InitErrorDetails(type=er["type"], loc=(name, *er["loc"]),
                                            input=er.get("input"), ctx=er.get("ctx", {}))
                           for er in e.errors()]
        for i, name in enumerate(self.probes or []):
            if name not in settings:
                errors.append(InitErrorDetails(
                    type="value_error", loc=("probes", i), input=name,
                    ctx={"error": ValueError(f"unknown probe; available: "
                                             f"{', '.join(sorted(settings))}")}))
        if errors:
            raise ValidationError.from_exception_data("AuditConfig", errors)
        for name, model in settings.items():  # every section present, defaults filled in
            extra.setdefault(name, model())
        return self

    def section(self, name: str) -> Section:
        """The validated settings of probe `name` (its defaults when the config has none)."""
        extra = self.__pydantic_extra__ or {}
        if name in extra:
            return extra[name]
        settings = probe_settings()
        if name not in settings:
            raise unknown_name("probe", name, settings, field="probes")
        return settings[name]()


class RunConfig(_Strict):
    run_dir: str = Field(description="folder holding everything this run produces")
    model: str = Field("builtin:tiny", description="'builtin:<size>' (sizes: finemem.models.base.SIZES), a local "
                                                   "Hugging Face folder or a hub id")
    trust_remote_code: bool = Field(False, description="run code shipped with a model (never "
                                                       "unless you say so)")
    allow_pickle: bool = Field(False, description="allow loading pickled (.bin) weights")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="auto picks cuda, then mps, then cpu")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = float32 on CPU, the model's own on GPU")
    data: DataConfig = Field(description="what to train on and evaluate with")
    training: TrainingConfig = Field(default_factory=TrainingConfig,
                                     description="how to fine-tune")
    audit: AuditConfig = Field(default_factory=AuditConfig,
                               description="what `finemem audit` measures per checkpoint")

    def digest(self, *, exclude_run_dir: bool = True) -> str:
        """Hash of everything that changes what training produces."""
        d = self.model_dump(mode="json")
        if exclude_run_dir:
            d.pop("run_dir")
        d.pop("audit", None)  # auditing settings do not change the checkpoints
        d["data"].pop("eval", None)  # nor do the evaluation sets
        if d["data"].get("max_length") is None:  # the default once was a fixed 512: clipping
            d["data"]["max_length"] = 512          # at min(context, 512) trains the same runs
        if d["data"].get("canaries") is None:
            d["data"].pop("canaries", None)  # runs from before canaries keep their digest
        elif d["data"]["canaries"].get("inclusion") == "tiers":  # issue 21: and these theirs
            d["data"]["canaries"].pop("inclusion")
        if d["data"].get("dedup") == "none":  # issue 21: runs without dedup keep their digest
            d["data"].pop("dedup", None)
            d["data"].pop("dedup_threshold", None)
        if d["data"].get("format") == "auto":
            d["data"].pop("format")  # runs from before data.format keep their digest
        if d["training"].get("mixed_precision") == "no":  # runs from before these two
            d["training"].pop("mixed_precision")            # settings keep their digest
        if d["training"].get("dp", 1) is None:  # issue 21: runs without DP keep their digest
            d["training"].pop("dp")
        if not d["training"].get("compile"):
            d["training"].pop("compile", None)
        # where metrics are logged and when a watch stops training change no checkpoint
        d["training"].pop("report_to", None)
        d["training"].pop("stop_after_overmemorized", None)
        d["training"].pop("gradient_checkpointing", None)  # same weights either way (tested)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def resolved(self) -> "RunConfig":
        """This config with local data paths and a local model folder made absolute (against
        the current directory, as they were read), so a run folder works from anywhere."""
        model = self.model
        if not model.startswith("builtin:") and (Path(model).expanduser().exists()
                                                  or model.startswith((".", "~", "/"))):
            model = str(Path(model).expanduser().resolve())
        audit = self.audit
        if audit.nonmembers is not None:
            audit = audit.model_copy(update={"nonmembers": audit.nonmembers.resolved()})
        return self.model_copy(update={"model": model, "data": self.data.resolved(),
                                       "audit": audit})

    @model_validator(mode="after")
    def _pass_format(self) -> "RunConfig":
        if self.audit.nonmembers is not None:  # non-members are read as the training data is
            self.audit.nonmembers._format = self.data.format
        return self

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
        if d.get(k) is None:  # an absent section, or one left empty (`nonmembers: null`)
            d[k] = {}
        d = d[k]
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
