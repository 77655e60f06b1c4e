"""Fine-tuning: full, LoRA (peft) and head-only, with every checkpoint kept and exact resume.

Usage:
    from finemem.train import train
    summary = train(load_config("run.yaml"))

Modules: `loop` (the entry point and loop), `setup` (checks before anything is written),
`methods` (which weights train), `loss` (CE and MAR), `batches` (order and padding),
`checkpoint` (safetensors checkpoints and resume state).
"""

from finemem.audit import selfref
from finemem.audit.probes import load_probes
from finemem.train.loop import train

# `train(load_config("run.yaml"))`: a config's audit sections are the probes' settings, which
# the config layer knows only once they are registered (docs/ARCHITECTURE.md).
load_probes()
# The audit's spv attack fine-tunes its reference with this training path (it cannot import it:
# training sits above the audit).
selfref.register_trainer(train)

__all__ = ["train"]
