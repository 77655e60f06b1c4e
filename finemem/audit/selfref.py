"""A reference model fine-tuned on text the audited model generated itself (the
self-calibrated reference of SPV-MIA, `finemem.audit.attacks.spv`), by finemem's own training
path (`finemem.train.train`) into a run folder of its own inside the audited run
(`RunFolder.reference_dir`), so a rerun finds it trained and reuses it.

Usage (the audit context's `self_reference_scores` calls it):
    rref, folder = fine_tune_reference(run_dir, cfg, texts, steps=20, lr=None, seed=0,
                                       key_parts=[ref.content_hash])   # CheckpointRef, Path
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from finemem.config import RunConfig
from finemem.data.example import Example
from finemem.io import write_text_atomic
from finemem.run import RunFolder

DATA_FILE = "texts.jsonl"


def reference_key(texts: list[Example], settings: dict, key_parts: list[str]) -> str:
    """A short hash of what makes the reference: the texts, the training settings and the
    audited checkpoint (`key_parts`)."""
    blob = json.dumps([key_parts, settings, [[t.prompt, t.completion] for t in texts]])
    return "spv-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def reference_config(cfg: RunConfig, folder: Path, data_file: Path, *, steps: int,
                     lr: float | None, n: int, seed: int) -> RunConfig:
    """The audited run's config turned into the reference's: the same base model and method,
    trained `steps` optimizer steps on `data_file` (plain prompt/completion rows), one
    checkpoint at the end; no eval sets, canaries, duplication, DP or online audit."""
    raw = cfg.model_dump(mode="json")
    raw["run_dir"] = str(folder / "run")
    data = raw["data"]
    data.update(train={"source": str(data_file)}, eval={}, canaries=None,
                duplication={"fraction": 0.0, "times": 1, "seed": 0}, dedup="none",
                format="plain")
    tr = raw["training"]
    tr.update(max_steps=int(steps), save_every=int(steps), dp=None, report_to=[],
              stop_after_overmemorized=None, seed=int(seed),
              batch_size=max(1, min(int(tr["batch_size"]), n)), grad_accum=1)
    if lr is not None:
        tr["lr"] = float(lr)
    raw["audit"] = {}
    return RunConfig.model_validate(raw)


# The audit sits below training, so it cannot import `finemem.train`; the train package hands
# its `train` in when it is imported (dependency inversion: one training path, no cycle).
_TRAIN = None


def register_trainer(train) -> None:
    """Called by `finemem.train` on import: the function that fine-tunes the reference."""
    global _TRAIN
    _TRAIN = train


def registered_trainer():
    """The registered training function, or None (handed to audit worker processes)."""
    return _TRAIN


def fine_tune_reference(run_dir: Path, cfg: RunConfig, texts: list[Example], *, steps: int,
                        lr: float | None, seed: int, key_parts: list[str]):
    """The `CheckpointRef` of the reference fine-tuned on `texts` (trained now, or found
    trained by an earlier audit), and its run folder."""
    from finemem import engine

    if _TRAIN is None:
        raise RuntimeError("the spv attack fine-tunes its reference with finemem's training "
                           "path: import finemem.train before auditing (the CLI does)")
    if not texts:
        raise ValueError("the self-calibrated reference needs at least one generated text")
    settings = {"steps": int(steps), "lr": lr, "seed": int(seed),
                "method": cfg.training.method}
    folder = RunFolder(run_dir).reference_dir(reference_key(texts, settings, key_parts))
    folder.mkdir(parents=True, exist_ok=True)
    data_file = folder / DATA_FILE
    if not data_file.is_file():
        write_text_atomic(data_file, "".join(
            json.dumps({"id": t.id, "prompt": t.prompt, "completion": t.completion}) + "\n"
            for t in texts))
    sub = reference_config(cfg, folder, data_file, steps=steps, lr=lr, n=len(texts), seed=seed)
    _TRAIN(sub, progress=False)  # a finished run folder of the same config returns at once
    refs = engine.load_run_checkpoints(sub.run_dir)
    return refs[-1], Path(sub.run_dir)
