"""The fine-tuning loop: `train(cfg)` writes a run folder with every checkpoint, and resumes.

Usage:
    from finemem.train import train
    summary = train(load_config("run.yaml"))   # {"run_dir", "checkpoints", "loss_per_epoch", ...}

Built on `accelerate.Accelerator`: `accelerate launch --multi_gpu -m finemem train ...` (or
`finemem train --num-processes N`) splits every micro-batch over N processes with DDP, so the
global batch and the numbers stay those of one process (`finemem.distributed`). AdamW, a
transformers scheduler (constant / linear / cosine, with warmup), gradient accumulation and
clipping. `max_steps`, when set, overrides `epochs` (as in
the HF Trainer). Each micro-batch loss is the mean over its loss tokens; an optimizer step
averages the losses of its micro-batches.

Resume: rerunning on the same run folder with the same config continues from the last complete
checkpoint with its optimizer, scheduler and RNG state, and replays the same batches, so the final
weights equal an uninterrupted run's. A finished run is left as it is; a folder holding another
config is refused unless `force` (which deletes it and starts over).
"""

from __future__ import annotations

import errno
import math
import os
import sqlite3
import shutil
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from finemem import distributed as ddp
from finemem import faults
from finemem.config import RunConfig
from finemem.errors import Interrupted, UserError
from finemem.models.load import pad_id, quiet_hf  # noqa: F401 (quiet_hf: re-exported)
from finemem.run import RunFolder
from finemem.store import Store
from finemem.train import checkpoint as ck
from finemem.train import dp
from finemem.train import watch
from finemem.train.batches import collate, epoch_batches, items_digest
from finemem.train.forward import batch_loss, head_parts
from finemem.train.methods import param_groups
from finemem.train.setup import init_run_dir, prepare, run_dir_state, write_config

LOG_EVERY = 50  # optimizer steps between train_log flushes (and at every checkpoint)
CRASH_ENV = "FINEMEM_CRASH_AFTER_STEP"  # test hook: die right after this step (and its save)


class SimulatedCrash(RuntimeError):
    """Raised by the FINEMEM_CRASH_AFTER_STEP test hook."""


def train(cfg: RunConfig, *, force: bool = False, progress: bool = True) -> dict:
    """Fine-tune `cfg.model` on `cfg.data.train` into `cfg.run_dir`.

    Returns
    -------
    dict with run_dir, checkpoints (names, by step), loss_per_epoch (mean step loss of each
    epoch), resumed_from (checkpoint name or None), already_complete, steps.
    """
    from accelerate.utils import set_seed

    cfg = cfg.resolved()  # the run folder is self-contained: data and model paths absolute
    run_dir = Path(cfg.run_dir)
    state = run_dir_state(run_dir, cfg)
    if state == "foreign":
        raise UserError("folder exists and is not a finemem run; pick another run_dir",
                        source=str(run_dir), field="run_dir")
    if state == "different" and not force:
        raise UserError("run folder holds a run with a different config; use another run_dir, "
                        "or --force to delete it and start over", source=str(run_dir),
                        field="run_dir")
    if state == "same" and not force:
        write_config(run_dir, cfg)  # same training; eval sets or audit settings may be new
        if _is_done(run_dir):
            return _complete(run_dir, cfg)

    watch.check_trackers(cfg.training.report_to)
    acc = make_accelerator(cfg.device, cfg.training, project_dir=run_dir / "logs")
    ddp.check_train_launch(cfg.training.batch_size, acc.num_processes)
    dp.check_dp(cfg, num_processes=acc.num_processes)  # issue 21 hook: DP refusals
    if cfg.training.stop_after_overmemorized and acc.num_processes > 1:
        raise UserError("stop_after_overmemorized audits on one process; train with one "
                        "process, or audit afterwards", field="training.stop_after_overmemorized")
    set_seed(cfg.training.seed)
    with quiet_hf():
        prep = prepare(cfg, device=acc.device)  # every input check happens here, before writes
    if force and state != "new" and acc.is_main_process:
        shutil.rmtree(run_dir)
        state = "new"
    if acc.is_main_process:
        if state == "same":
            ck.recover_state(run_dir)
        if ck.read_state(run_dir) is None:
            init_run_dir(run_dir, cfg, prep)
    acc.wait_for_everyone()
    resumed = ck.read_state(run_dir)
    if resumed is not None and resumed.get("done"):
        return _complete(run_dir, cfg)
    if resumed is not None and resumed.get("data_digest") != items_digest(prep.items):
        raise UserError("the training data changed since this run started, so it cannot "
                        "resume; restore the data, or use --force to start over",
                        source=str(run_dir), field="data.train")
    with RunFolder(run_dir).open_store() as store:
        if acc.is_main_process:
            store.put_run(cfg.digest(), cfg.model_dump(mode="json"), status="running")
            RunFolder(run_dir).record_base_hash(store, prep.base_path)  # for readers
        trainer = _Trainer(cfg, acc, prep, store, run_dir, progress=progress)
        trainer.watch = watch.Watch(cfg, acc, run_dir)
        if acc.is_main_process:  # distributed.json: processes, effective batch, LR schedule
            ddp.write_layout(run_dir, cfg, acc, total_steps=trainer.total_steps,
                             steps_per_epoch=trainer.steps_per_epoch,
                             start_step=resumed["step"] if resumed else 0)
            if trainer.dp is not None:  # issue 21 hook: the DP record and the sampling
                trainer.dp.write_sampling(run_dir)
                trainer.dp.record(run_dir)
                for line in trainer.dp.caveats:
                    from rich.console import Console

                    Console(stderr=True).print(f"[yellow]training.dp:[/] {line}")
        try:
            trainer.run(resumed)
        except (KeyboardInterrupt, OSError, sqlite3.OperationalError) as e:
            _stopped(e, trainer, run_dir, store, cfg.digest(), acc.is_main_process)
        trainer.watch.close()
        if acc.is_main_process:
            store.set_status(cfg.digest(), "stopped-early" if trainer.stopped_early
                             else "complete")
        acc.wait_for_everyone()  # every process returns the finished run's summary
        return _summary(run_dir, resumed_from=resumed["checkpoint"] if resumed else None,
                        already_complete=False, store=store)


def _stopped(e: BaseException, trainer: "_Trainer", run_dir: Path, store: Store, run_id: str,
             main: bool) -> None:
    """Ctrl-C or a full disk in the training loop: tidy the run folder up to its last complete
    checkpoint (what a rerun resumes from) and raise one line that says so; any other error
    is raised as it is."""
    full = (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or \
        (isinstance(e, sqlite3.OperationalError) and "full" in str(e))
    if not isinstance(e, KeyboardInterrupt) and not full:
        raise e
    if main:
        try:
            ck.recover_state(run_dir)  # drop a half-written checkpoint or state swap
            store.set_status(run_id, "interrupted" if not full else "disk full")
        except (OSError, sqlite3.Error):
            pass
    last = ck.read_state(run_dir)
    where = f"from {last['checkpoint']}" if last else "from the start"
    if full:
        raise UserError(f"disk full at step {trainer.step} of {trainer.total_steps} "
                        f"({getattr(e, 'strerror', None) or e}); free some space and rerun to "
                        f"resume ({where})", source=str(run_dir)) from None
    raise Interrupted(f"interrupted at step {trainer.step} of {trainer.total_steps}; rerun to "
                      f"resume ({where}, the last complete checkpoint)") from None


def make_accelerator(device: str, training=None, project_dir: Path | None = None):
    """An `Accelerator` on `device` ('auto', 'cpu', 'cuda', 'mps'), with the mixed precision
    and torch.compile setting of `training` (a TrainingConfig; None: neither).

    accelerate keeps one process-wide state; in a single process (not `accelerate launch`) it
    is reset first, so that consecutive runs in one Python process may use different devices.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    from finemem.models.load import pick_device

    dev = pick_device(device)  # a clear error for 'cuda' without CUDA
    mp = training.mixed_precision if training is not None else "no"
    if mp == "fp16" and dev.type != "cuda":
        raise UserError("training.mixed_precision fp16 needs a CUDA GPU; use bf16 or no on "
                        f"{dev.type}", field="training.mixed_precision")
    if PartialState._shared_state and PartialState._shared_state.get("num_processes", 1) == 1:
        AcceleratorState._reset_state(reset_partial_state=True)
    compiled = training is not None and training.compile
    # launched on a machine without CUDA: cpu=True, else accelerate sets up no gloo group
    cpu = device == "cpu" or (ddp.active() and not torch.cuda.is_available())
    log_with = (training.report_to or None) if training is not None else None
    acc = Accelerator(cpu=cpu, mixed_precision=mp,
                      dynamo_backend="inductor" if compiled else "no", log_with=log_with,
                      project_dir=str(project_dir) if log_with and project_dir else None)
    ddp.check_world(acc.num_processes)
    return acc


def _register_checkpoints(store: Store, run_dir: Path, upto: int) -> None:
    """Re-register the complete checkpoints up to step `upto` that a crash kept out of the
    store."""
    for c in ck.list_checkpoints(run_dir / "checkpoints"):
        if c["step"] <= upto:
            store.add_checkpoint(c["name"], step=c["step"], epoch=c["epoch"],
                                 path=str(Path(c["path"]).resolve()), kind=c["kind"],
                                 content_hash=c["content_hash"])


def _complete(run_dir: Path, cfg: RunConfig) -> dict:
    """The summary of a finished run, after making sure its store lists every checkpoint and
    says 'complete' (a kill can fall between the last checkpoint and that bookkeeping)."""
    if ddp.is_main():  # under a launcher, the main process alone writes the store
        with RunFolder(run_dir).open_store() as store:
            _register_checkpoints(store, run_dir, ck.read_state(run_dir)["step"])
            store.put_run(cfg.digest(), cfg.model_dump(mode="json"),
                          status="stopped-early" if watch.read_stop(run_dir) else "complete")
    return _summary(run_dir, resumed_from=None, already_complete=True)


def _is_done(run_dir: Path) -> bool:
    st = ck.read_state(run_dir)
    return bool(st and st.get("done")) or watch.read_stop(run_dir) is not None


def _summary(run_dir: Path, *, resumed_from, already_complete: bool,
             store: Store | None = None) -> dict:
    st = ck.read_state(run_dir) or {}
    spe = st.get("steps_per_epoch") or 1
    own = store is None
    store = RunFolder(run_dir).open_store() if own else store
    try:
        log = store.train_log()
        ckpts = [c["name"] for c in store.checkpoints()]
    finally:
        if own:
            store.close()
    per_epoch: dict[int, list[float]] = {}
    for step, _, loss, _ in log:
        per_epoch.setdefault((step - 1) // spe, []).append(loss)
    return {"run_dir": str(run_dir), "checkpoints": ckpts,
            "loss_per_epoch": [sum(v) / len(v) for _, v in sorted(per_epoch.items())],
            "resumed_from": resumed_from, "already_complete": already_complete,
            "steps": st.get("step", 0), "stopped_early": watch.read_stop(run_dir)}


class _Trainer:
    def __init__(self, cfg: RunConfig, acc, prep, store: Store, run_dir: Path, *,
                 progress: bool):
        self.cfg, self.t, self.acc, self.prep = cfg, cfg.training, acc, prep
        self.store, self.run_dir, self.progress = store, run_dir, progress
        self.kind = self.t.method
        # global micro-batches: each is split over the processes (distributed.local_share)
        n_micro = len(epoch_batches(len(prep.items), batch_size=self.t.batch_size, seed=0,
                                    epoch=0))
        self.steps_per_epoch = math.ceil(n_micro / self.t.grad_accum)
        self.total_steps = self.t.max_steps or self.t.epochs * self.steps_per_epoch
        self.pending: list[tuple[int, float, torch.Tensor, float]] = []
        self.step = 0  # optimizer steps done (what an interrupt reports)
        self.stopped_early = False  # by the over-memorization watch (finemem.train.watch)
        self.watch = None
        self.data_digest = items_digest(prep.items)
        self.dp = None  # issue 21 hook: DP-SGD (finemem/train/dp.py)
        if self.t.dp is not None:
            self.dp = dp.DPRun(self.t, n=len(prep.items), total_steps=self.total_steps,
                               seed=self.t.seed, max_repeat=dp.repeats(prep.items))
        crash = os.environ.get(CRASH_ENV)
        self.crash_after = int(crash) if crash else None

    def _save_due(self, step: int) -> bool:
        if step == self.total_steps:
            return True
        every = self.t.save_every
        return step % self.steps_per_epoch == 0 if every == "epoch" else step % every == 0

    def _flush(self) -> None:
        if not self.pending:
            return
        losses = torch.stack([p[2] for p in self.pending]).float().cpu().tolist()  # one sync
        losses = ddp.reduce_sum(losses, self.acc)  # each process holds its weighted share
        if not self.acc.is_main_process:
            self.pending = []
            return
        rows = [(s, e, loss, lr) for (s, e, _, lr), loss in zip(self.pending, losses)]
        self.store.log_train_many(rows)
        if self.watch is not None:
            self.watch.log_train(rows)
        self.pending = []

    def _save(self, model, optimizer, scheduler, step: int) -> None:
        self.acc.wait_for_everyone()
        self._flush()
        if not self.acc.is_main_process:
            return
        name = ck.checkpoint_name(step)
        epoch = step / self.steps_per_epoch
        extra = {}  # issue 21 hook: the epsilon this checkpoint spent
        if self.dp is not None:
            extra = {"dp_epsilon": self.dp.epsilon(step), "dp_delta": self.dp.delta,
                     "dp_accountant_history": self.dp.history(step)}
            optimizer = optimizer.original_optimizer
        ck.write_state(self.run_dir / "state.tmp", optimizer=optimizer, scheduler=scheduler,
                       trainer_state={"step": step, "epoch": epoch, "checkpoint": name,
                                      "total_steps": self.total_steps,
                                      "steps_per_epoch": self.steps_per_epoch,
                                      "done": step == self.total_steps,
                                      "config_digest": self.cfg.digest(),
                                      "data_digest": self.data_digest, **extra})
        with quiet_hf():
            info = ck.save_checkpoint(self.acc.unwrap_model(dp.unwrap(model)),
                                      self.run_dir / "checkpoints",
                                      step=step, epoch=epoch, kind=self.kind,
                                      base_model=self.prep.base_path, extra_meta=extra)
        faults.point("state_swap")
        ck.commit_state(self.run_dir)
        if self.dp is not None:
            self.dp.record(self.run_dir, name, step, extra["dp_epsilon"])
        self.store.add_checkpoint(name, step=step, epoch=epoch, path=str(Path(info["path"])
                                                                         .resolve()),
                                  kind=self.kind, content_hash=info["content_hash"])

    def run(self, resumed: dict | None) -> None:
        from transformers import get_scheduler

        t, acc, model = self.t, self.acc, self.prep.model
        step = 0
        if resumed is not None:
            ck.load_checkpoint_weights(model, self.run_dir / "checkpoints" /
                                       resumed["checkpoint"], self.kind)
            step = self.step = resumed["step"]
            if acc.is_main_process:
                _register_checkpoints(self.store, self.run_dir, step)
        optimizer = torch.optim.AdamW(param_groups(model, t.weight_decay), lr=t.lr)
        sched_name = "constant_with_warmup" if t.scheduler == "constant" else t.scheduler
        scheduler = get_scheduler(sched_name, optimizer, num_warmup_steps=t.warmup_steps,
                                  num_training_steps=self.total_steps)
        if resumed is not None:
            ck.restore_state(self.run_dir, optimizer=optimizer, scheduler=scheduler)
        if self.dp is not None:  # issue 21 hook: Opacus wraps instead of accelerate
            model, optimizer = self.dp.wrap(model, optimizer)
        else:
            model, optimizer = acc.prepare(model, optimizer)
        params = [p for p in model.parameters() if p.requires_grad]
        # the head only where a loss falls (forward.py); DP-SGD runs its own per-sample pass
        parts = head_parts(model, acc, t) if self.dp is None else None
        pad = pad_id(self.prep.tokenizer)
        items, spe = self.prep.items, self.steps_per_epoch
        n_epochs = math.ceil(self.total_steps / spe)
        model.train()
        with _progress_bar(self.progress and acc.is_main_process, self.total_steps,
                           step) as bar:
            for epoch in range(step // spe, n_epochs):
                batches = epoch_batches(len(items), batch_size=t.batch_size, seed=t.seed,
                                        epoch=epoch)
                first = (step - epoch * spe) * t.grad_accum  # micro-batches already done
                for g0 in range(first, len(batches), t.grad_accum):
                    if step >= self.total_steps:
                        break
                    group = batches[g0:g0 + t.grad_accum]
                    lr = scheduler.get_last_lr()[0]
                    loss_sum = torch.zeros((), device=acc.device)
                    if self.dp is not None:  # issue 21 hook: one Poisson batch per step
                        loss_sum = self.dp.backward(model, items, step, pad=pad,
                                                    device=acc.device, training=t)
                        group = [None] if loss_sum is not None else []
                    for j, idx in enumerate(group if self.dp is None else []):
                        # this process's slice and loss weight (the whole batch, 1.0, alone)
                        idx, share = ddp.local_share(idx, items, acc.num_processes,
                                                     acc.process_index)
                        batch = {k: v.to(acc.device, non_blocking=True)
                                 for k, v in collate([items[i] for i in idx],
                                                     pad_id=pad).items()}
                        sync = j == len(group) - 1
                        with nullcontext() if sync else acc.no_sync(model):
                            loss = batch_loss(model, batch, t, parts, acc)
                            if acc.num_processes > 1:  # DDP averages: weight * N
                                loss = loss * share
                                acc.backward(loss * acc.num_processes / len(group))
                            else:
                                acc.backward(loss / len(group))
                        loss_sum += loss.detach()
                    if t.max_grad_norm is not None and self.dp is None:
                        acc.clip_grad_norm_(params, t.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    step = self.step = step + 1
                    if group:  # an empty Poisson batch (DP) has no loss to log
                        self.pending.append((step, step / spe, loss_sum / len(group), lr))
                    faults.point("train_step")
                    if self._save_due(step):
                        self._save(model, optimizer, scheduler, step)
                        if self.watch is not None and self.watch.after_save(
                                ck.checkpoint_name(step), step):
                            self.stopped_early = True
                            return
                    elif len(self.pending) >= LOG_EVERY:
                        self._flush()
                    if bar is not None:
                        bar.advance(step, self.pending)
                    if self.crash_after is not None and step == self.crash_after:
                        raise SimulatedCrash(f"{CRASH_ENV}={step}")
        self._flush()


class _Bar:
    """A rich progress bar over optimizer steps showing the latest step loss."""

    def __init__(self, total: int, start: int):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.p = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[loss]}"), TimeElapsedColumn(),
                          TimeRemainingColumn())
        self.task = self.p.add_task("train", total=total, completed=start, loss="")
        self.last = 0.0

    def advance(self, step: int, pending) -> None:
        fields = {}
        if pending and time.monotonic() - self.last > 1.0:  # reading a loss syncs: 1/second
            self.last = time.monotonic()
            fields["loss"] = f"loss {float(pending[-1][2]):.4f}"
        self.p.update(self.task, completed=step, **fields)


@contextmanager
def _progress_bar(enabled: bool, total: int, start: int):
    if not enabled:
        yield None
        return
    bar = _Bar(total, start)
    with bar.p:
        yield bar
