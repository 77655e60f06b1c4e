"""Name -> class registries (tasks, probes, metrics, report sections, experiments): adding one
is adding a file to its package, which imports its own modules when first read.

Usage:
    TASKS: dict[str, type[Task]] = {}
    register_task = registrar(TASKS, "task")

    @register_task("arith")
    class ArithTask(Task): ...

Lookups of unknown names go through `finemem.errors.unknown_name` (did-you-mean).
"""

from __future__ import annotations

import importlib
import pkgutil
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


def import_modules(package: str) -> None:
    """Import every module of `package` whose name does not start with "_" (each registers what
    it defines on import). Idempotent; lazy so that importing a registry stays cheap."""
    pkg = importlib.import_module(package)
    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{package}.{mod.name}")
