"""Fine-tuning: full, LoRA (peft) and head-only, with every checkpoint kept and exact resume.

Usage:
    from finemem.train import train
    summary = train(load_config("run.yaml"))

Modules: `loop` (the entry point and loop), `setup` (checks before anything is written),
`methods` (which weights train), `loss` (CE and MAR), `batches` (order and padding),
`checkpoint` (safetensors checkpoints and resume state).
"""

from finemem.train.loop import train

__all__ = ["train"]
