"""Probes: what `finemem audit` measures on each checkpoint, one module each.

Usage:
    finemem audit RUN_DIR --probes likelihood,overmem
    from finemem.audit.probes import get_probe, probe_names

A probe is a module in this package with a `Probe` subclass decorated `@register_probe`:

    @register_probe("likelihood")
    class Likelihood(Probe):
        class Config(Section):          # its section, `audit: {likelihood: {...}}`
            train_sample: int = Field(200, gt=0)
        def prepare(self, ctx): ...     # once per run: load and encode its data
        def requests(self, ctx, ref): ...     # optional: the scores run() will ask for
        def run(self, ctx, ref, model): ...   # once per checkpoint: ask the engine, store metrics

The audit loop (`finemem.audit.loop`) loads every checkpoint once and runs each requested probe
on it. A probe that reads another's results names it in `needs`; the loop runs that one too,
first. A probe is done on a checkpoint when its done-key (its name, settings and the content
of its inputs) is in the store, so a rerun computes only what is missing. Adding a probe is
adding a file here: the package's modules are imported when the registry is first read.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
import json
from typing import ClassVar

from finemem.config import Section, probe_settings_loaded, register_probe_settings
from finemem.errors import UserError, unknown_name
from finemem.registry import import_modules, registrar

PROBES: dict[str, type["Probe"]] = {}


class Probe(ABC):
    name: ClassVar[str] = ""
    Config: ClassVar[type[Section]] = Section
    default: ClassVar[bool] = True          # run when neither audit.probes nor --probes is set
    needs: ClassVar[tuple[str, ...]] = ()   # probes whose results this one reads
    description: ClassVar[str] = ""
    version: ClassVar[int] = 1              # bump when what the probe computes changes

    def __init__(self, cfg: Section):
        self.cfg = cfg
        self.inputs: list = []  # what prepare() loaded, as plain data: part of the done-key
        self.note: str | None = None  # a line for the user on what prepare() chose

    def describe(self) -> dict:
        """Settings prepare() resolved (e.g. a cut fitted to the data), kept with the audit
        in the store."""
        return {}

    def prepare(self, ctx) -> None:
        """Once per run, before any checkpoint: load data, check settings."""

    def requests(self, ctx, ref) -> list:
        """The scores and generations `run` will ask for on `ref`, as `ctx.score_request` /
        `ctx.token_request` / `ctx.generation_request` objects: the loop runs every probe's
        requests together, scores one pass per distinct text (`AuditContext.prefetch`).
        Optional: what is not requested is computed by the probe's own calls."""
        return []

    @abstractmethod
    def run(self, ctx, ref, model) -> None:
        """Once per checkpoint: ask `ctx` (the engine and the store) and store metrics."""

    def done_key(self) -> str:
        h = hashlib.sha256(self.name.encode())
        if self.version != 1:  # version 1 keeps the keys of stores written before versions
            h.update(f"v{self.version}".encode())
        h.update(self.cfg.model_dump_json().encode())
        h.update(json.dumps(self.inputs, sort_keys=True, default=str).encode())
        return h.hexdigest()[:12]


_register = registrar(PROBES, "probe")


def register_probe(name: str):
    """Class decorator: file the probe under `name`, and its `Config` as the settings of
    `audit: {name: ...}` (the config layer's `PROBE_SETTINGS`, which validates that section)."""
    def deco(cls: type[Probe]) -> type[Probe]:
        _register(name)(cls)
        register_probe_settings(name, cls.Config)
        return cls
    return deco


def load_probes() -> None:
    """Import every module of this package: each registers the probe it defines (and its
    settings, so that a run config's audit sections can be parsed)."""
    import_modules(__name__)
    probe_settings_loaded()


def get_probe(name: str) -> type[Probe]:
    load_probes()
    if name not in PROBES:
        raise _unknown(name)
    return PROBES[name]


def probe_names() -> list[str]:
    load_probes()
    return sorted(PROBES)


def resolve_probes(names: list[str] | None) -> list[str]:
    """The probes to run, in order: `names` (None = the default ones) plus what they need,
    each after the probes it needs."""
    load_probes()
    wanted = [n for n, p in PROBES.items() if p.default] if names is None else list(names)
    order: list[str] = []

    def add(n: str) -> None:
        if n in order:
            return
        for dep in get_probe(n).needs:
            add(dep)
        order.append(n)

    for n in wanted:
        add(n)
    return order


def _unknown(name: str) -> UserError:
    return unknown_name("probe", name, sorted(PROBES), field="probes")
