"""What `finemem train` does beside training: log to the user's trackers and, opt-in, stop
when over-memorization sets in.

    training:
      report_to: [tensorboard]          # accelerate's trackers; logs in RUN_DIR/logs
      stop_after_overmemorized: 2       # audit each checkpoint as saved; stop after 2 in a row

With `stop_after_overmemorized: N`, each checkpoint is audited when it is saved (the default
probes) and training stops after N consecutive over-memorized checkpoints, naming the
checkpoint to ship: the online stop of `finemem.audit.online`, the same one `FinememCallback`
uses. This saves the compute the paper spends past the plateau.
"""

from __future__ import annotations

from pathlib import Path

from finemem.audit.online import STOPPED, audit_checkpoint, read_stop, shared_stop  # noqa: F401
from finemem.errors import UserError


def check_trackers(names: list[str]) -> None:
    """Refuse, before anything is written, a tracker accelerate does not know or that is not
    installed."""
    import accelerate.utils as au
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    for name in names:
        if name not in LOGGER_TYPE_TO_CLASS:
            raise UserError(f"unknown tracker '{name}'; known: "
                            f"{', '.join(sorted(LOGGER_TYPE_TO_CLASS))}",
                            field="training.report_to")
        available = getattr(au, f"is_{name}_available", None)
        if available is not None and not available():
            raise UserError(f"tracker '{name}' is not installed (pip install {name})",
                            field="training.report_to")


class Watch:
    """Tracker logging and the online over-memorization stop, for one training run (main
    process only)."""

    def __init__(self, cfg, acc, run_dir: Path):
        self.cfg, self.acc, self.run_dir = cfg, acc, Path(run_dir)
        self.stop_after = cfg.training.stop_after_overmemorized
        self.logging = bool(cfg.training.report_to) and acc.is_main_process
        if self.logging:
            acc.init_trackers("finemem", config={"run_dir": str(run_dir),
                                                 "model": cfg.model,
                                                 "method": cfg.training.method,
                                                 "lr": cfg.training.lr,
                                                 "epochs": cfg.training.epochs})

    def log_train(self, rows) -> None:
        """rows: (step, epoch, loss, lr) of the steps just flushed to the store."""
        if self.logging:
            for step, epoch, loss, lr in rows:
                self.acc.log({"train/loss": loss, "train/lr": lr, "train/epoch": epoch},
                             step=step)

    def after_save(self, name: str, step: int) -> bool:
        """Audit checkpoint `name` when the stop rule is on; log its metrics; True = stop
        (on every process: the main process's decision)."""
        if not self.stop_after:
            return False
        v = audit_checkpoint(self.run_dir, name, step=step, stop_after=self.stop_after)
        if v is not None and self.logging:
            self.acc.log(v.metrics, step=step)
        return shared_stop(v)

    def close(self) -> None:
        if self.logging:
            self.acc.end_training()
