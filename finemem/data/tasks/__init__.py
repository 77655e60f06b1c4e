"""Registry of built-in procedural tasks.

Usage:
    from finemem.data.tasks import get_task
    examples = get_task("arith").generate("train", n=500, seed=0)

A task is a module in this package that subclasses `Task` and decorates it with
`@register_task("name")`. Adding a task is adding a file: the package imports its modules
when the registry is first read.

Contract every task keeps:
- `generate(split, n, seed)` is deterministic in (split, n, seed); the first k examples of
  n are the same for any n >= k (so a bigger eval set extends a smaller one).
- splits are disjoint: no prompt appears in two splits (including the pretraining corpus).
- ids are stable strings "<task>-<split>-<index>".
- `eval_splits` (split -> role) names splits of `splits`; it must hold "test".
- `pretrain_texts(n, seed)` yields plain texts for the base model's pretraining corpus, drawn
  with other seeds than any fine-tuning split and disjoint from them.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import ClassVar

from finemem.data.example import Example
from finemem.errors import UserError, unknown_name
from finemem.registry import import_modules, registrar

TASKS: dict[str, type["Task"]] = {}


class Task(ABC):
    name: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    # Metadata the audit reads instead of hard-coding: how to grade a generation.
    answer_extractor: ClassVar[str | None] = None  # e.g. "hash" for '#### 42'; None = no answer
    # The evaluation sets an audit uses when the run names none (`data.eval` empty): split ->
    # role, one of "test" (required), "ood" (out of distribution) or "variant" (a robustness
    # variant of test; the audit reports accuracy_drop = test accuracy - variant accuracy).
    eval_splits: ClassVar[dict[str, str]] = {"test": "test"}

    @abstractmethod
    def generate(self, split: str, n: int, seed: int = 0) -> list[Example]:
        """The first n examples of `split` (deterministic in split, n, seed)."""

    @abstractmethod
    def pretrain_texts(self, n: int, seed: int = 0) -> list[str]:
        """Plain texts for the base model's pretraining corpus."""

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise UserError(f"task '{self.name}' has no split '{split}'; "
                            f"available: {', '.join(self.splits)}", field="split")


register_task = registrar(TASKS, "task")


def get_task(name: str, **options) -> Task:
    """The registered task `name`, built with its generator options (e.g. arith's pair_frac)."""
    _load_builtin()
    if name not in TASKS:
        raise unknown_name("task", name, TASKS, field="task")
    cls = TASKS[name]
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = [n for n, p in inspect.signature(cls.__init__).parameters.items()
                if n != "self" and p.kind in named]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(f"task '{name}' has no option {', '.join(map(repr, unknown))}; "
                        f"options: {', '.join(accepted) or 'none'}", field="options")
    try:
        return cls(**options)
    except (TypeError, ValueError) as e:
        raise UserError(f"bad option for task '{name}': {e}", field="options") from None


def task_names() -> list[str]:
    _load_builtin()
    return sorted(TASKS)


def _load_builtin() -> None:
    import_modules(__name__)
