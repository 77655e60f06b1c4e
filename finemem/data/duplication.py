"""Data duplication for memorization studies, and the run's manifest.

Usage:
    expanded, rows = apply_duplication(examples, cfg.data.duplication)
    write_manifest(run_dir / "manifest.jsonl", rows)

`apply_duplication` chooses ``k = floor(fraction * N + 0.5)`` of the N examples (round half up)
with ``random.Random(seed)``, and repeats each chosen example ``times`` times in the per-epoch
training list; the others appear once. The expanded list keeps the original order with the
repeats adjacent (the same `Example` object repeated); the trainer shuffles it every epoch.

The manifest has one JSON line per distinct training example, in the original order:
``{"id", "times_per_epoch", "prompt_chars", "completion_chars"}``.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from finemem.data.example import Example
from finemem.errors import UserError
from finemem.io import write_text_atomic

MANIFEST_KEYS = ("id", "times_per_epoch", "prompt_chars", "completion_chars")


def chosen_indices(n: int, fraction: float, *, seed: int) -> list[int]:
    """Sorted indices of the ``floor(fraction * n + 0.5)`` examples picked for duplication."""
    k = min(n, math.floor(fraction * n + 0.5))
    return sorted(random.Random(seed).sample(range(n), k))


def apply_duplication(examples: list[Example], dup) -> tuple[list[Example], list[dict]]:
    """Expand `examples` by `dup` (a `finemem.config.Duplication`).

    Returns
    -------
    expanded : list of Example
        ``N - k + k * times`` items: each chosen example ``times`` times in a row, the others
        once, in the original order.
    manifest : list of dict
        One row per input example, in the original order (see the module docstring).
    """
    ids = [ex.id for ex in examples]
    if any(i is None for i in ids) or len(set(ids)) != len(ids):
        raise ValueError("apply_duplication needs unique, non-None example ids")
    chosen = set(chosen_indices(len(examples), dup.fraction, seed=dup.seed))
    expanded: list[Example] = []
    manifest: list[dict] = []
    for i, ex in enumerate(examples):
        times = dup.times if i in chosen else 1
        expanded.extend([ex] * times)
        manifest.append({"id": ex.id, "times_per_epoch": times,
                         "prompt_chars": len(ex.prompt), "completion_chars": len(ex.completion)})
    return expanded, manifest


def write_manifest(path: str | Path, rows: list[dict]) -> None:
    """Write `rows` as JSON lines, atomically (a temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_manifest(path: str | Path) -> list[dict]:
    """Rows written by `write_manifest`. A damaged file raises `UserError` naming the line."""
    path = Path(path)
    if not path.is_file():
        raise UserError("manifest not found; is this a finemem run folder?", source=str(path))
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"damaged manifest line ({e.msg})", source=str(path),
                                row=lineno) from None
            missing = [k for k in MANIFEST_KEYS if not isinstance(row, dict) or k not in row]
            if missing:
                raise UserError(f"manifest line lacks {', '.join(missing)}", source=str(path),
                                row=lineno, field=missing[0])
            rows.append(row)
    return rows
