"""Running finemem on several processes (`accelerate launch` / `torchrun`): who does what.

Usage:
    accelerate launch --multi_gpu --num_processes 2 -m finemem train --config run.yaml
    accelerate launch --multi_gpu --num_processes 2 -m finemem audit runs/my-run
    finemem train --config run.yaml --num-processes 2        # the same, started for you

In one process (no launcher: WORLD_SIZE unset or 1) every function here is a no-op or the
identity, and nothing touches `torch.distributed`.

Training (`finemem.train.loop`): every optimizer step sees the same global micro-batches as a
one-process run; each rank trains on a contiguous slice of batch_size / N examples of each
micro-batch (`local_share`), and its loss is weighted so that DDP's gradient mean equals the
one-process gradient (mean over the micro-batch's loss tokens).

Audits (`finemem.engine.cache`): each rank computes the missing examples at positions
rank, rank + N, ... of a call's list (`shard`: an explicit split by index, no padding, so no
example is computed twice or dropped), writes its rows to the store (SQLite in WAL mode takes
several writers), waits for the others (`barrier`), and reads every rank's rows back: that is
the gather. Every rank then holds every result; only the main process writes metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from finemem.errors import UserError


def world_size() -> int:
    """Processes started by the launcher (1 without one)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def active() -> bool:
    return world_size() > 1


def is_main() -> bool:
    return rank() == 0


def state():
    """accelerate's `PartialState` (initializes the process group: gloo on CPU, nccl on
    GPU); None in one process."""
    if not active():
        return None
    import torch
    from accelerate import PartialState

    st = PartialState(cpu=not torch.cuda.is_available())  # without cpu=True: no gloo group
    check_world(st.num_processes)
    return st


def check_world(num_processes: int) -> None:
    """Refuse to go on when accelerate sees fewer processes than the launcher started: every
    process would then do all the work and write the run folder at once."""
    if num_processes != world_size():
        raise UserError(f"the launcher started {world_size()} processes but accelerate sees "
                        f"{num_processes}; on a machine without GPUs launch with "
                        "`accelerate launch --multi_gpu` or `torchrun` (`accelerate launch "
                        "--cpu` starts one process) and set device: cpu or auto")


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if active():
        state().wait_for_everyone()


def shard(items: list) -> list:
    """This rank's share of `items`: positions rank, rank + N, ... (the identity in one
    process). Shares are disjoint and together hold every item once, whatever the count."""
    if not active():
        return items
    return items[rank()::world_size()]


def device(requested: str) -> str:
    """The device of this rank: 'cuda:<local rank>' where a launched run asks for 'auto' or
    'cuda' on a GPU machine; `requested` otherwise."""
    if active() and requested in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return requested


def sharded_kind() -> str | None:
    """'FSDP' or 'DeepSpeed ZeRO-3' when the launcher's config shards model weights, else
    None (read from the environment `accelerate launch` sets)."""
    env = os.environ
    if env.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return "FSDP"
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true") and \
            env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "") == "3":
        return "DeepSpeed ZeRO-3"
    return None


def check_audit_launch() -> None:
    """Refuse, with one line, an audit launched with weight sharding: the engine holds a whole
    model per process and generation does not gather sharded parameters."""
    kind = sharded_kind()
    if active() and kind:
        raise UserError(f"finemem audit does not support {kind} (generation does not gather "
                        "sharded weights); launch the audit with a DDP config, e.g. "
                        "examples/accelerate/ddp.yaml: each process holds the whole model")


def check_train_launch(batch_size: int, num_processes: int) -> None:
    """Refuse a batch that does not split evenly over the processes, and weight sharding
    (FSDP / DeepSpeed), whose checkpoint and resume writes are not implemented."""
    if num_processes <= 1:
        return
    kind = sharded_kind() or ("DeepSpeed" if os.environ.get("ACCELERATE_USE_DEEPSPEED", "")
                              .lower() in ("1", "true") else None)
    if kind:
        raise UserError(f"finemem train does not support {kind} yet (its checkpoints and "
                        "resume state are written from unsharded weights and optimizer); use a "
                        "DDP config, e.g. examples/accelerate/ddp.yaml")
    if batch_size % num_processes:
        raise UserError(f"training.batch_size {batch_size} does not divide over "
                        f"{num_processes} processes; use a multiple of {num_processes} (each "
                        "process takes batch_size / processes examples of every micro-batch)",
                        field="training.batch_size")


# training --------------------------------------------------------------------------------
def loss_tokens(item) -> int:
    """Loss-bearing tokens of one training item (labels after the shift, not -100)."""
    return int((item[1][1:] != -100).sum())


def local_share(idx: list[int], items: list, num_processes: int, process_index: int
                ) -> tuple[list[int], float]:
    """(this process's examples of the global micro-batch `idx`, its loss weight).

    Process p takes the p-th contiguous slice of ceil(len(idx) / N) examples. Its weight is
    its share of the micro-batch's loss tokens, so sum_p weight_p * mean_loss_p equals the
    one-process mean over the micro-batch; DDP averages gradients, so the loss it back-props
    is weight * N * mean_loss. A process left without examples (a short last micro-batch)
    runs the first example with weight 0, so that every process joins the gradient reduce.
    """
    if num_processes <= 1:
        return idx, 1.0
    per = -(-len(idx) // num_processes)
    mine = idx[process_index * per:(process_index + 1) * per]
    if not mine:
        return idx[:1], 0.0
    total = sum(loss_tokens(items[i]) for i in idx)
    return mine, (sum(loss_tokens(items[i]) for i in mine) / total) if total else 0.0


def write_layout(run_dir: Path, cfg, acc, *, total_steps: int, steps_per_epoch: int,
                 start_step: int) -> None:
    """distributed.json in the run folder: how the run was spread and what the optimizer saw
    (the effective batch and the learning-rate schedule), so that a 1-process and an
    N-process run can be compared. Each start (and resume) is appended to `starts`."""
    t = cfg.training
    path = Path(run_dir) / "distributed.json"
    old = json.loads(path.read_text("utf-8")) if path.is_file() else {}
    n = acc.num_processes
    layout = {
        "num_processes": n, "distributed_type": str(acc.distributed_type).split(".")[-1],
        "backend": _backend(), "device": str(acc.device),
        "mixed_precision": str(acc.mixed_precision),
        "per_process_batch": t.batch_size // n if n > 1 else t.batch_size,
        "global_micro_batch": t.batch_size, "grad_accum": t.grad_accum,
        "effective_batch": t.batch_size * t.grad_accum,
        "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
        "lr": t.lr, "scheduler": t.scheduler, "warmup_steps": t.warmup_steps,
        "note": "the effective batch and the schedule do not depend on num_processes: each "
                "micro-batch of global_micro_batch examples is split over the processes",
        "starts": old.get("starts", []) + [{"step": start_step, "num_processes": n}],
    }
    from finemem.io import write_text_atomic

    write_text_atomic(path, json.dumps(layout, indent=2) + "\n")


def _backend() -> str | None:
    try:
        import torch.distributed as dist

        return dist.get_backend() if dist.is_available() and dist.is_initialized() else None
    except (RuntimeError, ValueError):
        return None


def reduce_sum(values: list[float], acc) -> list[float]:
    """Element-wise sum of `values` over the processes (identity in one process)."""
    if acc.num_processes <= 1 or not values:
        return values
    import torch

    t = torch.tensor(values, dtype=torch.float64, device=acc.device)
    return acc.reduce(t, reduction="sum").cpu().tolist()


# starting a launcher ----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(num_processes: int, args: list[str]) -> int:
    """Run `finemem <args>` on `num_processes` processes under `accelerate launch` (DDP:
    --multi_gpu, which on a machine without GPUs starts that many gloo processes on CPU);
    returns its exit status. Each process gets cores / num_processes torch threads unless
    OMP_NUM_THREADS is set."""
    if num_processes < 1:
        raise UserError("--num-processes must be >= 1", field="--num-processes")
    if active():
        raise UserError("--num-processes inside a launched run: start finemem either with "
                        "`accelerate launch` or with --num-processes, not both",
                        field="--num-processes")
    if shutil.which("accelerate") is None and not _has_module("accelerate"):
        raise UserError("--num-processes needs accelerate (pip install accelerate)")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_processes)))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", str(num_processes), "--num_machines", "1",
           "--main_process_port", str(_free_port()), "--dynamo_backend", "no",
           "--mixed_precision", "no", "-m", "finemem", *args]
    return subprocess.run(cmd, env=env).returncode


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
