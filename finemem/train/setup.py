"""Everything `train` checks and builds before it writes anything, and the run folder's start.

Usage:
    state = run_dir_state(run_dir, cfg)         # "new" | "same" | "different" | "foreign"
    prep = prepare(cfg, device=accelerator.device)   # raises UserError on any bad input
    init_run_dir(run_dir, cfg, prep)

`prepare` resolves the model, loads the tokenizer, the training data (with duplication) and the
model, and applies the fine-tuning method (which checks LoRA targets), so that a bad input is
reported before the run folder exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from finemem.config import RunConfig, load_config
from finemem.data.duplication import apply_duplication, write_manifest
from finemem.data.loaders import load_examples
from finemem.errors import UserError
from finemem.io import write_text_atomic
from finemem.models.load import (load_model, load_tokenizer, model_positions, resolve_model,
                                  run_max_length)
from finemem.train.batches import encode_examples
from finemem.train.methods import apply_method


@dataclass
class Prepared:
    base_path: str  # resolved base model folder (or hub id)
    tokenizer: object
    model: torch.nn.Module  # method applied (peft-wrapped for lora), on `device`
    items: list[tuple[torch.Tensor, torch.Tensor]]  # (input_ids, labels) per training example
    manifest: list[dict]
    eval_warnings: list[str] = field(default_factory=list)  # from check_eval_sets
    canaries: list = field(default_factory=list)  # finemem.data.canaries.Canary, twins too


def run_dir_state(run_dir: Path, cfg: RunConfig) -> str:
    """'new' (absent or empty), 'same' (a run of this config), 'different' (a run of another
    config) or 'foreign' (a non-empty folder that is not a finemem run)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError("run_dir is a file; pick a folder", source=str(run_dir), field="run_dir")
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return "new"
    stored = run_dir / "config.yaml"
    if not stored.is_file():
        return "foreign"
    try:
        old = load_config(stored)
    except UserError:
        return "different"
    # Both resolved: config.yaml stores absolute paths, `cfg` may hold them as written.
    return "same" if old.resolved().digest() == cfg.resolved().digest() else "different"


def prepare(cfg: RunConfig, *, device, config_source: str | None = None) -> Prepared:
    """Validate the model, tokenizer, data (the eval sets too) and method; build the model to
    train. `config_source` (the config file) is named in eval-set errors."""
    from finemem.audit.evalsets import check_eval_sets

    base_path = resolve_model(cfg.model)
    tok = load_tokenizer(base_path, trust_remote_code=cfg.trust_remote_code)
    examples = load_examples(cfg.data.train, tokenizer=tok,
                             trust_remote_code=cfg.trust_remote_code)
    if not examples:
        raise UserError("the training set is empty", source=cfg.data.train.source,
                        field="data.train")
    eval_warnings = check_eval_sets(cfg, tok, config_source=config_source,
                                    train_examples=examples)
    expanded, manifest = apply_duplication(examples, cfg.data.duplication)
    if cfg.data.dedup != "none":  # issue 21 hook: deduplication (finemem/data/dedup.py)
        from finemem.data.dedup import dedup_examples, dedup_manifest

        expanded, removed = dedup_examples(expanded, mode=cfg.data.dedup,
                                           threshold=cfg.data.dedup_threshold)
        manifest = dedup_manifest(manifest, removed)
    max_length = run_max_length(cfg)  # unset: the model's context, at most 512
    items = encode_examples(tok, expanded, loss_on=cfg.data.loss_on, max_length=max_length)
    model = load_model(base_path, device=device, dtype=cfg.dtype,
                       trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle)
    check_context(model, items, expanded, cfg)
    canaries = []
    if cfg.data.canaries is not None:  # planted secrets (the base scores the high-PPL family)
        canaries, items, manifest = _plant_canaries(cfg, tok, model, items, manifest,
                                                    max_length)
    model = apply_method(model, cfg.training)
    if cfg.training.dp is not None:  # issue 21 hook: a layer Opacus cannot handle, named
        from finemem.train.dp import check_layers

        check_layers(model)
    return Prepared(base_path=base_path, tokenizer=tok, model=model, items=items,
                    manifest=manifest, eval_warnings=eval_warnings, canaries=canaries)


def _plant_canaries(cfg: RunConfig, tok, model, items, manifest, max_length: int):
    """Canaries and twins of cfg.data.canaries, the canaries' training items appended to
    `items` (`tier` copies each) and their manifest rows (finemem.data.canaries)."""
    from finemem.data.canaries import insert_canaries, make_canaries
    from finemem.data.format import encode
    from finemem.engine import score

    def base_nll(examples):
        pairs = [encode(tok, e, loss_on="completion", max_length=max_length)
                 for e in examples]
        return [s.nll_mean for s in score(model, [(p.context, p.target) for p in pairs],
                                          min_k_stats=False)]

    canaries = make_canaries(cfg.data.canaries, tok, scorer=base_nll)
    planted, manifest = insert_canaries([], manifest, canaries)
    items = items + encode_examples(tok, planted, loss_on=cfg.data.loss_on,
                                    max_length=max_length)
    return canaries, items, manifest


def check_context(model, items, examples, cfg: RunConfig) -> None:
    """Refuse, before anything is written, a training example whose tokens (after clipping to
    data.max_length) do not fit the model's context."""
    ctx = model_positions(model)
    if ctx is None or not items:
        return
    i = max(range(len(items)), key=lambda j: len(items[j][0]))
    n = len(items[i][0])
    if n > ctx:
        raise UserError(f"example '{examples[i].id}' is {n} tokens, longer than the model's "
                        f"context of {ctx} positions; set data.max_length: {ctx} (or less) to "
                        "clip long examples, or shorten them", source=cfg.data.train.source,
                        field="data.max_length")


def write_config(run_dir: Path, cfg: RunConfig) -> None:
    """Write config.yaml atomically, unless it already holds exactly this config. For a run
    with the same training digest this takes in new eval sets or audit settings, so
    `finemem audit` uses them."""
    path = Path(run_dir) / "config.yaml"
    text = cfg.to_yaml()
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    write_text_atomic(path, text)


def init_run_dir(run_dir: Path, cfg: RunConfig, prep: Prepared) -> None:
    """Write config.yaml (first, atomically: it marks the folder as this run's; local paths
    made absolute, so the folder is self-contained), then manifest.jsonl and tokenizer/. Safe
    to repeat while the run has no checkpoint yet."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, cfg.resolved())
    for sub in ("checkpoints", "report"):
        (run_dir / sub).mkdir(exist_ok=True)
    write_manifest(run_dir / "manifest.jsonl", prep.manifest)
    if prep.canaries:
        from finemem.data.canaries import write_canaries

        write_canaries(run_dir / "canaries.jsonl", prep.canaries)
    prep.tokenizer.save_pretrained(str(run_dir / "tokenizer"))
