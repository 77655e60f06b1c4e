"""`finemem merge`: average two checkpoints of a run into a new checkpoint that the audit
treats like any other. The arithmetic lives in `finemem.models.merge`; this module names the
output and writes the `finemem_ckpt.json` record the engine reads.

Merged checkpoints go to RUN_DIR/merges/<name>/ by default; `finemem audit RUN_DIR` scores
them after the trajectory and reports them beside it (they take no part in the stage rule).
"""

from __future__ import annotations

from pathlib import Path

from finemem.models.merge import merge_checkpoints
from finemem.errors import UserError
from finemem.io import write_json_atomic
from finemem.run.checkpoints import CKPT_META, content_hash, read_checkpoint_meta, weight_files


def _record(ckpt: Path) -> dict:
    meta = read_checkpoint_meta(ckpt)
    if meta is None:
        raise UserError(f"not a finemem checkpoint (no {CKPT_META})", source=str(ckpt))
    return meta


def merge_run_checkpoints(ckpt_a: Path, ckpt_b: Path, *, alpha: float = 0.5,
                          out: Path | None = None) -> Path:
    ckpt_a, ckpt_b = Path(ckpt_a), Path(ckpt_b)
    ra, rb = _record(ckpt_a), _record(ckpt_b)
    if ra.get("base_model") != rb.get("base_model"):
        raise UserError("the two checkpoints come from different base models; merge two "
                        "checkpoints of the same run", source=str(ckpt_b))
    if out is None:
        run_dir = ckpt_a.parent.parent
        out = run_dir / "merges" / f"merge-{ckpt_a.name}-{ckpt_b.name}-a{alpha:g}"
    out.parent.mkdir(parents=True, exist_ok=True)
    merge_checkpoints(ckpt_a, ckpt_b, out, alpha)
    record = {"step": max(ra["step"], rb["step"]), "epoch": max(ra["epoch"], rb["epoch"]),
              "kind": ra["kind"], "base_model": ra["base_model"],
              "content_hash": content_hash(weight_files(out)), "merged_from": [str(ckpt_a), str(ckpt_b)],
              "alpha": alpha}
    write_json_atomic(out / CKPT_META, record)  # last: it marks the folder as complete
    return out
