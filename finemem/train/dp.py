"""DP-SGD fine-tuning with Opacus: per-sample clipping, Gaussian noise, Poisson sampling and an
accountant (`training.dp: {epsilon: 8, delta: auto, max_grad_norm: 1.0, accountant: prv}`).

Usage (the training loop's hooks):
    check_dp(cfg, num_processes=acc.num_processes)   # refusals, before anything is written
    check_layers(model)                               # after the method is applied
    dp = DPRun(cfg.training, n=len(items), total_steps=T, seed=cfg.training.seed)
    model, optimizer = dp.wrap(model, optimizer)      # GradSampleModule + DPOptimizer
    loss = dp.backward(model, items, step, pad=pad_id, device=dev, training=cfg.training)
    optimizer.step(); dp.epsilon(step)                # epsilon spent after `step` steps

What it does:
- The noise multiplier is calibrated (Opacus `get_noise_multiplier`) so that `total_steps`
  steps at sample rate q = batch_size / n reach `epsilon` at `delta` (auto: 1 / (10 n), n the
  training rows, canaries and repeats included) under the chosen accountant.
- Each step's batch is a Poisson sample: every row in with probability q, drawn from a
  generator seeded by (seed, step) alone, so a resumed run replays the same batches; the
  noise generator is reseeded the same way, so a resume reaches the same weights. The
  accountant's state is its history [(noise multiplier, q, steps)], a function of the step:
  each checkpoint records the epsilon spent so far (finemem_ckpt.json, RUN_DIR/dp.json).
- The per-sample loss is each row's mean over its loss tokens (the non-DP loss is a mean over
  the batch's tokens, which would mix rows); Opacus computes per-sample gradients of the
  trainable parameters only (LoRA: the adapters; head: lm_head), by its registered rules and
  by functorch for layers without one (LlamaRMSNorm in Opacus 1.6: only torch.nn.RMSNorm has
  a rule), and the DPOptimizer clips each to `max_grad_norm`, adds N(0, sigma^2 C^2) noise
  and divides by the expected batch size. training.max_grad_norm is not applied on top.
Where the accountant's assumptions break, `caveats` says so (dp.json and the console): a text
repeated r times (data.duplication, canary tiers) is protected as a group of r rows, not as
one. Refused with one line: grad_accum > 1, several processes, mixed precision,
torch.compile, a trainable
layer Opacus cannot give per-sample gradients (named).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch

from finemem.errors import UserError
from finemem.io import write_json_atomic
from finemem.run.privacy import read_dp, write_dp


def check_dp(cfg, *, num_processes: int) -> None:
    """Refuse, in one line each, the settings DP-SGD here does not support."""
    t = cfg.training
    if t.dp is None:
        return
    if num_processes > 1:
        raise UserError("training.dp trains in one process: finemem does not wire or test "
                        "Opacus' multi-process DP; train with one process", field="training.dp")
    if t.grad_accum != 1:
        raise UserError(f"training.dp needs training.grad_accum: 1 (each step is one Poisson "
                        f"batch, as the accountant assumes); set batch_size: "
                        f"{t.batch_size * t.grad_accum} and grad_accum: 1 instead",
                        field="training.grad_accum")
    if t.mixed_precision != "no":
        raise UserError("training.dp trains in float32 (Opacus' per-sample gradients are not "
                        "autocast here); set training.mixed_precision: 'no'",
                        field="training.mixed_precision")
    if t.compile:
        raise UserError("training.dp cannot be compiled (Opacus' per-sample hooks); set "
                        "training.compile: false", field="training.compile")


def check_layers(model: torch.nn.Module) -> None:
    """Refuse a model with a trainable layer Opacus cannot compute per-sample gradients for
    (a trainable layer that also holds buffers, e.g. BatchNorm), naming the layer."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from opacus.grad_sample import GradSampleModule
        from opacus.utils.module_utils import trainable_modules

    for name, mod in trainable_modules(model):
        if list(mod.buffers()):
            raise UserError(f"training.dp: layer '{name}' ({type(mod).__name__}) trains and "
                            "holds buffers, which Opacus cannot give per-sample gradients; "
                            "train another method (lora / head) or freeze it",
                            field="training.dp")
    GradSampleModule.validate(model, strict=True)  # belt and braces: Opacus' own check


def _seed(kind: str, seed: int, step: int) -> int:
    digest = hashlib.sha256(f"finemem-dp-{kind}:{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def repeats(items) -> int:
    """The most times one training row's tokens occur in `items` (1 = no repeats)."""
    seen: dict[int, int] = {}
    for ids, _ in items:
        seen[id(ids)] = seen.get(id(ids), 0) + 1
    return max(seen.values(), default=1)


class DPRun:
    """One DP-SGD run's sampling, noise and accounting (see the module docstring)."""

    def __init__(self, training, *, n: int, total_steps: int, seed: int, max_repeat: int = 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from opacus.accountants.utils import get_noise_multiplier

        d = training.dp
        self.cfg, self.n, self.total_steps, self.seed = d, n, total_steps, seed
        self.batch_size = training.batch_size
        self.q = min(1.0, training.batch_size / n)
        self.delta = 1.0 / (10 * n) if d.delta == "auto" else float(d.delta)
        with warnings.catch_warnings():  # Opacus' notes on its alpha grid
            warnings.simplefilter("ignore")
            self.sigma = float(get_noise_multiplier(
                target_epsilon=d.epsilon, target_delta=self.delta, sample_rate=self.q,
                steps=total_steps, accountant=d.accountant, epsilon_tolerance=0.01))
        self.caveats = []
        if max_repeat > 1:
            self.caveats.append(
                f"some training texts occur up to {max_repeat} times (data.duplication or "
                f"canary tiers): the guarantee is per row, so such a text is protected as a "
                f"group of {max_repeat} rows (roughly {max_repeat}x epsilon), not as one")
        self.generator = torch.Generator()

    def poisson_batch(self, step: int) -> list[int]:
        """Rows of step `step` (0-based): each in with probability q, seeded by (seed, step)."""
        g = torch.Generator().manual_seed(_seed("batch", self.seed, step))
        return torch.nonzero(torch.rand(self.n, generator=g) < self.q).flatten().tolist()

    def wrap(self, model, optimizer):
        """(GradSampleModule around `model`, DPOptimizer around `optimizer`)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from opacus import GradSampleModule
            from opacus.optimizers import DPOptimizer

            gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean")
        opt = DPOptimizer(optimizer, noise_multiplier=self.sigma,
                          max_grad_norm=self.cfg.max_grad_norm,
                          expected_batch_size=self.batch_size, loss_reduction="mean",
                          generator=self.generator)
        return gsm, opt

    def backward(self, model, items, step: int, *, pad: int, device, training):
        """Forward and backward of step `step`'s Poisson batch; its mean per-sample loss
        (detached), or None for an empty batch (the step still adds noise)."""
        from finemem.train.batches import collate
        from finemem.train.loss import causal_lm_loss

        self.generator.manual_seed(_seed("noise", self.seed, step))
        idx = self.poisson_batch(step)
        if not idx:
            for p in model.parameters():
                if p.requires_grad:
                    p.grad_sample = p.new_zeros((0, *p.shape))
            return None
        batch = {k: v.to(device) for k, v in collate([items[i] for i in idx], pad_id=pad).items()}
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits
        per = torch.stack([causal_lm_loss(logits[i:i + 1], batch["labels"][i:i + 1],
                                          kind=training.loss, mar_detach=training.mar_detach)
                           for i in range(len(idx))])  # (B,) one loss per row
        loss = per.mean()
        with warnings.catch_warnings():  # frozen inputs (LoRA): torch's note on full hooks
            warnings.filterwarnings("ignore", message="Full backward hook")
            loss.backward()
        return loss.detach()

    def epsilon(self, steps: int) -> float:
        """Epsilon at `delta` after `steps` steps (the accountant's history, replayed)."""
        if steps <= 0:
            return 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from opacus.accountants import create_accountant

            acc = create_accountant(self.cfg.accountant)
            acc.history = [(self.sigma, self.q, steps)]
            return float(acc.get_epsilon(delta=self.delta))

    def history(self, steps: int) -> list:
        return [[self.sigma, self.q, steps]]

    def record(self, run_dir: Path, checkpoint: str | None = None, step: int = 0,
               epsilon: float | None = None) -> None:
        """Write RUN_DIR/dp.json (the settings; with `checkpoint`, its epsilon added)."""
        from finemem.run import RunFolder
        from finemem.run.checkpoints import list_checkpoints

        old = read_dp(run_dir) or {}
        done = dict(old.get("checkpoints", {}))
        # a kill between a checkpoint's rename and this record: its metadata has the epsilon
        for m in list_checkpoints(RunFolder(run_dir).checkpoints_dir):
            if "dp_epsilon" in m:
                done.setdefault(m["name"], {"step": m["step"], "epsilon": m["dp_epsilon"]})
        rec = {"target_epsilon": self.cfg.epsilon, "delta": self.delta,
               "delta_setting": self.cfg.delta, "noise_multiplier": self.sigma,
               "sample_rate": self.q, "expected_batch_size": self.batch_size, "n": self.n,
               "max_grad_norm": self.cfg.max_grad_norm, "accountant": self.cfg.accountant,
               "total_steps": self.total_steps, "sampling": "poisson",
               "caveats": self.caveats, "checkpoints": done}
        if checkpoint is not None:
            rec["checkpoints"][checkpoint] = {"step": step, "epsilon": epsilon}
        write_dp(run_dir, rec)

    def write_sampling(self, run_dir: Path) -> None:
        """Add the sampling to distributed.json (next to the batch layout)."""
        path = Path(run_dir) / "distributed.json"
        layout = json.loads(path.read_text("utf-8")) if path.is_file() else {}
        layout["sampling"] = {"kind": "poisson", "sample_rate": self.q,
                              "expected_batch_size": self.batch_size,
                              "note": "training.dp: each step draws every row with "
                                      "probability sample_rate; steps_per_epoch is expected"}
        write_json_atomic(path, layout, indent=2)


def unwrap(model):
    """The model inside an Opacus GradSampleModule (the model itself otherwise)."""
    inner = getattr(model, "_module", None)
    return inner if inner is not None and type(model).__name__.startswith("GradSample") \
        else model

