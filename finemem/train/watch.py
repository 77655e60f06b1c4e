"""What `finemem train` does beside training: log to the user's trackers and, opt-in, stop
when over-memorization sets in.

    training:
      report_to: [tensorboard]          # accelerate's trackers; logs in RUN_DIR/logs
      stop_after_overmemorized: 2       # audit each checkpoint as saved; stop after 2 in a row

With `stop_after_overmemorized: N`, each checkpoint is audited when it is saved (the default
probes, the same loop and store as `finemem audit`), the stage rule is applied to the
checkpoints so far (the running best accuracy and running minimum test PPL), and training
stops after N consecutive over-memorized checkpoints, naming the checkpoint to ship. The stop
is recorded in RUN_DIR/stopped.json, so a rerun does not resume past it. This saves the
compute the paper spends past the plateau.
"""

from __future__ import annotations

import json
from pathlib import Path

from finemem.errors import UserError

STOPPED = "stopped.json"


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


def read_stop(run_dir: Path) -> dict | None:
    p = Path(run_dir) / STOPPED
    return json.loads(p.read_text()) if p.is_file() else None


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
        """Audit checkpoint `name` when the stop rule is on; log its metrics; True = stop."""
        if not self.stop_after or not self.acc.is_main_process:
            return False
        from finemem.audit import audit_run, summarize
        from finemem.integrations.callback import online_streak
        from finemem.store import Store

        audit_run(self.run_dir, progress=False)
        s = summarize(self.run_dir)
        if self.logging:
            with Store(self.run_dir / "results.sqlite") as store:
                rows = store.metrics(checkpoint=name)
            self.acc.log({f"finemem/{r['split']}/{r['name']}": r["value"] for r in rows
                          if r["split"] != "*" and not r["setting"]}, step=step)
        labels = [lab.label for lab in s.labels]
        streak = online_streak(labels) if s.graded else 0
        if streak < self.stop_after:
            return False
        info = {"step": step, "checkpoint": name, "overmemorized_in_a_row": streak,
                "ship": s.recommendation.name, "why": s.recommendation.explanation}
        from finemem.io import write_json_atomic

        write_json_atomic(self.run_dir / STOPPED, info)
        return True

    def close(self) -> None:
        if self.logging:
            self.acc.end_training()
