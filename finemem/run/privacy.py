"""The run folder's record of differential privacy, RUN_DIR/dp.json (written by
`finemem.train.dp` through `write_dp`, read by the canaries probe through its context,
`recommend`, `compare` and the report).

Usage:
    rec = read_dp(run_dir)          # None for a run trained without training.dp
    rec["delta"], rec["checkpoints"]["step-000040"]["epsilon"]

Fields: target_epsilon, delta, noise_multiplier, sample_rate, expected_batch_size, n,
max_grad_norm, accountant, total_steps, sampling ("poisson"), caveats (list of str), and
checkpoints: {name: {step, epsilon}}, the epsilon the accountant says each checkpoint spent.
"""

from __future__ import annotations

import json
from pathlib import Path

from finemem.errors import UserError
from finemem.io import write_json_atomic
from finemem.run.folder import RunFolder


def read_dp(run_dir: str | Path) -> dict | None:
    path = RunFolder(run_dir).dp_file
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"damaged DP record ({e.msg})", source=str(path), row=e.lineno) from None


def write_dp(run_dir: str | Path, rec: dict) -> None:
    """Replace RUN_DIR/dp.json with `rec`, atomically."""
    write_json_atomic(RunFolder(run_dir).dp_file, rec)


def epsilon_at(run_dir: str | Path, checkpoint: str) -> float | None:
    """The epsilon the accountant says `checkpoint` spent; None without DP (or for the base)."""
    rec = read_dp(run_dir)
    if rec is None:
        return None
    row = rec.get("checkpoints", {}).get(checkpoint)
    return None if row is None else float(row["epsilon"])
