"""finemem inside other training loops.

    from finemem.integrations import FinememCallback    # HF Trainer / TRL SFTTrainer

`FinememCallback` (callback.py) audits each checkpoint the Trainer saves with finemem's probes,
logs the results through the Trainer's `report_to` trackers and can stop training when
over-memorization sets in; `bridge.register_checkpoint` brings a foreign checkpoint folder into
a finemem run folder.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name == "FinememCallback":  # imports transformers' Trainer machinery on first use
        from finemem.integrations.callback import FinememCallback

        return FinememCallback
    raise AttributeError(name)


__all__ = ["FinememCallback"]
