"""One training or evaluation example: a prompt and the completion the model should write."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Example:
    prompt: str
    completion: str
    answer: str | None = None  # the gradable final answer, when the task has one
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # True when prompt and completion are a chat template's rendering (prompt = the
    # conversation up to the assistant's turn, completion = that turn with its end token):
    # encoding then adds no bos/eos of its own (finemem.data.format)
    chat: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Example":
        return cls(prompt=d["prompt"], completion=d["completion"], answer=d.get("answer"),
                   id=d.get("id"), meta=dict(d.get("meta") or {}), chat=bool(d.get("chat")))
