"""Name -> class registries (tasks, probes, experiments): adding one is adding a file.

Usage:
    TASKS: dict[str, type[Task]] = {}
    register_task = registrar(TASKS, "task")

    @register_task("arith")
    class ArithTask(Task): ...

Lookups of unknown names go through `finemem.errors.unknown_name` (did-you-mean).
"""

from __future__ import annotations

from typing import Callable


def registrar(table: dict, kind: str) -> Callable[[str], Callable[[type], type]]:
    """A `register_<kind>(name)` class decorator that files the class in `table` and sets its
    `name`. Registering another class under a taken name is a programming error."""
    def register(name: str):
        def deco(cls: type) -> type:
            if name in table and table[name] is not cls:
                raise ValueError(f"{kind} '{name}' is already registered by "
                                 f"{table[name].__module__}.{table[name].__qualname__}")
            cls.name = name
            table[name] = cls
            return cls
        return deco
    return register
