"""`FinememCallback`: finemem's audit inside a Hugging Face `Trainer` (or TRL `SFTTrainer`).

    from finemem.integrations import FinememCallback

    trainer = SFTTrainer(model=model, args=SFTConfig(output_dir="out", save_steps=50,
                                                     report_to=["tensorboard"]), ...)
    cb = FinememCallback(trainer, data={"train": {"source": "train.jsonl"},
                                        "eval": {"test": {"source": "test.jsonl"}}},
                         stop_after_overmemorized=3)
    trainer.train()
    cb.ship            # {"checkpoint": "out/checkpoint-150", "name": "step-000150", "reason": ...}

At each save the new `checkpoint-N` is registered in a finemem run folder (default
`<output_dir>/finemem`: config.yaml, tokenizer/, checkpoints/, the results store) and audited
with the configured probes by the same loop and store as `finemem audit` (the base model is
audited once, at the first save, as step 0); per-example results are written in chunks, logits
are never accumulated. The new checkpoint's metrics go through `trainer.log`, so they reach
whatever `report_to` names (TensorBoard, MLflow, W&B, ...) next to the loss, as
`finemem/<split>/<metric>` (settings appended as `.<key>_<value>`: names every tracker
accepts), with `finemem/overmemorized_streak` and
`finemem/stage` (index in `finemem.analysis.stages.LABELS`, -1 when ungraded). Without the
trainer (`callbacks=[FinememCallback(data=...)]`) they go to `state.log_history` only.

`stop_after_overmemorized=N` stops training once N consecutive checkpoints are labelled
over-memorized by the stage rule, applied online: each checkpoint is labelled against the
checkpoints audited so far (the running best accuracy and the running PPL minimum), which is
what the full-run rule gives for every checkpoint up to the run's best. `ship` names the
checkpoint to ship (the recommendation over the checkpoints so far) after every save.

`finemem report <output_dir>/finemem` renders the run afterwards.

Several processes (`torchrun` / `accelerate launch` with DDP): the main process writes the run
folder and registers each checkpoint; every process then takes part in the audit (each scores
its share of the examples, as `finemem audit` does under a launcher) and every process gets the
main process's stop decision, so they all stop at the same step. The output folder must be
shared by the processes (one machine, or a shared file system).
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from finemem.audit.online import (audit_checkpoint, online_streak,  # noqa: F401 (re-exported)
                                  shared_stop)
from finemem.errors import UserError
from finemem.run import RunFolder


class FinememCallback(TrainerCallback):
    """Audit every checkpoint the Trainer saves, log the results to its trackers, and
    optionally stop when over-memorization sets in (see the module docstring).

    Parameters
    ----------
    trainer : the Trainer to attach to (the callback adds itself, and logs through
        `trainer.log`); None when passed as `callbacks=[...]` (no tracker logging).
    data : finemem's `data` config: `train` (the training data, for train PPL) and `eval`
        (at least `test`; answers make it graded, which the stage rule needs).
    run_dir : the finemem run folder (default `<output_dir>/finemem`).
    probes : probes to run (default: audit.probes, else likelihood + overmem).
    audit : finemem's `audit` config (probe settings), e.g. {"overmem": {"k_samples": 4}}.
    base_model : the base model, for step 0 and LoRA adapters (default: the model's
        `name_or_path`, or the adapter's base).
    stop_after_overmemorized : stop after this many consecutive over-memorized checkpoints.
    device : where the audit runs ("auto": the GPU when there is one).
    """

    def __init__(self, trainer=None, *, data: dict, run_dir: str | Path | None = None,
                 probes: list[str] | None = None, audit: dict | None = None,
                 base_model: str | None = None, stop_after_overmemorized: int | None = None,
                 device: str = "auto", verbose: bool = True):
        if stop_after_overmemorized is not None and stop_after_overmemorized < 1:
            raise UserError("stop_after_overmemorized must be >= 1 (or None)",
                            field="stop_after_overmemorized")
        self.trainer, self.data, self.audit_cfg = trainer, data, audit or {}
        self.run_dir = Path(run_dir) if run_dir else None
        self.probes, self.base_model, self.device = probes, base_model, device
        self.stop_after = stop_after_overmemorized
        self.verbose = verbose
        self.kind: str | None = None
        self.ship: dict | None = None
        self.stopped_at: str | None = None
        self.history: list[dict] = []  # one entry per audited save: step, label, streak
        if trainer is not None:
            trainer.add_callback(self)

    # set-up ------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kw):
        from finemem import distributed as ddp
        from finemem.audit.probes import load_probes
        from finemem.config import parse_config
        from finemem.io import write_text_atomic
        from finemem.models.load import load_tokenizer, resolve_model

        load_probes()  # every rank reads the run config, whose audit sections the probes own
        self.run_dir = self.run_dir or Path(args.output_dir) / "finemem"
        self.kind = "lora" if hasattr(model, "peft_config") else "full"
        if self.base_model is None:
            self.base_model = _base_of(model)
        if not state.is_world_process_zero:
            ddp.barrier()  # the main process resolves (builds) the base and writes the run folder
            self.base_model = resolve_model(self.base_model)
            return
        base = resolve_model(self.base_model)
        cfg = parse_config({"run_dir": str(self.run_dir), "model": base, "data": self.data,
                            "training": {"method": self.kind},
                            "audit": self.audit_cfg}, source="FinememCallback").resolved()
        self.base_model = base
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "checkpoints").mkdir(exist_ok=True)
        write_text_atomic(self.run_dir / "config.yaml", cfg.to_yaml())
        tok = processing_class if hasattr(processing_class, "save_pretrained") and \
            hasattr(processing_class, "encode") else load_tokenizer(base)
        tok = getattr(tok, "tokenizer", tok)  # a processor's text tokenizer
        tok.save_pretrained(str(self.run_dir / "tokenizer"))
        ddp.barrier()

    # each save ---------------------------------------------------------------------------
    def on_save(self, args, state, control, **kw):
        """Register the new checkpoint (main process), audit it (every process takes its
        share), log it and decide whether to stop (the online stop of
        `finemem.audit.online`: judged on the main process, shared with the others)."""
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        from finemem import distributed as ddp
        from finemem.integrations.bridge import register_checkpoint

        if self.run_dir is None:
            return control
        src = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        info = None
        if state.is_world_process_zero and src.is_dir():
            info = register_checkpoint(src, self.run_dir / "checkpoints",
                                       step=state.global_step, epoch=float(state.epoch or 0.0),
                                       base_model=self.base_model, kind=self.kind)
            with RunFolder(self.run_dir).open_store() as store:
                store.add_checkpoint(info["name"], step=state.global_step,
                                     epoch=float(state.epoch or 0.0), path=info["path"],
                                     kind=info["kind"], content_hash=info["content_hash"])
                RunFolder(self.run_dir).record_base_hash(store, self.base_model)
        if ddp.active():
            ddp.barrier()  # the checkpoint is registered before any process audits it
            if not src.is_dir():  # saved on the main process's file system only
                raise UserError(f"{src} is not visible to process {ddp.rank()}: "
                                "FinememCallback needs an output_dir all processes share",
                                field="output_dir")
        elif info is None:
            return control
        name = info["name"] if info is not None else None
        verdict = audit_checkpoint(self.run_dir, name, step=state.global_step,
                                   stop_after=self.stop_after, probes=self.probes,
                                   device=self.device) if info is not None or ddp.active() \
            else None
        if info is not None and verdict is not None:
            self._after_audit(args, state, verdict)
        if shared_stop(verdict if info is not None else None):
            control.should_training_stop = True
        return control

    def _after_audit(self, args, state, v) -> None:
        """Main process: log the new checkpoint's metrics and stage, name the checkpoint to
        ship."""
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        if v.summary is None:
            self._say(f"finemem: {v.name} audited; no stage summary: {v.note}")
        else:
            rec = v.summary.row(v.summary.recommendation.name)
            folder = (Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{rec.step}"
                      if rec.step else None)
            self.ship = {"name": rec.name, "step": rec.step,
                         "checkpoint": str(folder) if folder else "the base model",
                         "finemem_checkpoint": str(self.run_dir / "checkpoints" / rec.name)
                         if rec.step else None,
                         "reason": v.summary.recommendation.explanation}
            self._say(f"finemem: {v.name} audited: {v.label}"
                      + (f" ({v.streak} over-memorized in a row)" if v.streak else "")
                      + f"; ship {self.ship['checkpoint']}")
        self.history.append({"name": v.name, "label": v.label, "streak": v.streak,
                             "stage_index": v.stage_index})
        if self.trainer is not None:
            self.trainer.log(dict(v.metrics))
        else:
            state.log_history.append({**v.metrics, "step": state.global_step})
        if v.stop:
            self.stopped_at = v.name
            self._say(f"finemem: {v.streak} consecutive over-memorized checkpoints: "
                      f"stopping training; ship {self.ship['checkpoint']}")

    def _say(self, text: str) -> None:
        if self.verbose:
            print(text, flush=True)


def _base_of(model) -> str:
    """The base model of a (possibly peft-wrapped) model: its adapter's base, else its
    config's name_or_path."""
    peft = getattr(model, "peft_config", None)
    if peft:
        cfg = next(iter(peft.values()))
        if getattr(cfg, "base_model_name_or_path", None):
            return cfg.base_model_name_or_path
    name = getattr(getattr(model, "config", None), "_name_or_path", None)
    if not name:
        raise UserError("cannot tell the base model; pass base_model= to FinememCallback",
                        field="base_model")
    return name
