"""Registry of experiments: runs of finemem itself that show or test something end to end.

Usage:
    from finemem.experiments import get_experiment, experiment_names
    exp = get_experiment("over-memorization")
    exp.run(Path("runs/reproduce"), doc=Path("docs/REPLICATION.md"))

An experiment is one module in this package plus its YAML settings beside it (the module
`over_memorization.py` reads `over_memorization.yaml`). The module subclasses `Experiment`
and decorates it with `@register_experiment("name")`; adding an experiment is adding the two
files, nothing else (the modules of this package are imported when the registry is first
read). `finemem reproduce NAME` runs the experiments marked `reproducible`; `finemem demo`
runs "demo"; `finemem sweep` (module `sweep`) is a grid over any run config.

Contract every experiment keeps:
- `run(out, **opts)` writes every run it makes under `out`, one normal run folder each, so a
  rerun resumes and only computes what is missing;
- `configs(out)` returns the run configs it would train, validated, without training
  anything (the tests check every shipped experiment this way).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import yaml

from finemem.errors import UserError, unknown_name
from finemem.registry import import_modules, registrar

EXPERIMENTS: dict[str, type["Experiment"]] = {}

# Said under every report an experiment writes: its figures depend on the machine's base build.
MACHINE_NOTE = ("These figures come from one machine. The self-built base model is "
                "bit-identical for the same thread count on one machine but not across machines, "
                "so another machine shows other numbers; for the over-memorization runs two "
                "machines gave the same verdicts (docs/OVER_MEMORIZATION.md).")


def render_markdown(template: str, **context) -> str:
    """An experiment's Markdown report from its Jinja2 template in templates/ (no HTML
    escaping: Markdown; `machine_note` is passed in)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("finemem.experiments", "templates"),
                      autoescape=False, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True, undefined=StrictUndefined)
    return env.get_template(template).render(machine_note=MACHINE_NOTE, **context)


def with_machine_note(lines: list[str]) -> list[str]:
    """`lines` (title, "", first paragraph, ...) with MACHINE_NOTE as the second paragraph."""
    return lines[:3] + ["", MACHINE_NOTE] + lines[3:]


def merge(base: dict, over: dict) -> dict:
    """`base` with `over` merged in (nested dicts merge, anything else replaces)."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else \
            copy.deepcopy(v)
    return out


class Experiment(ABC):
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""      # one line, for `--help`
    settings_file: ClassVar[str] = ""    # the YAML beside the module, e.g. "demo.yaml"
    reproducible: ClassVar[bool] = False  # run by `finemem reproduce NAME`
    command: ClassVar[str] = ""          # its own command, when it has one (`finemem demo`)

    settings_path: Path | None = None     # a user's settings file replacing the shipped one
    # `finemem reproduce`'s shared options (finemem.cli.common), set before run():
    overrides: dict | None = None         # --set / --device: config keys of every run
    progress: bool = True                 # --no-progress: no progress bars
    quiet: bool = False                   # --quiet: result lines only, no tables

    @property
    def settings_source(self) -> str:
        """Where the settings come from, for error messages."""
        return str(self.settings_path or self.settings_file)

    def settings(self) -> dict:
        """The experiment's YAML settings (a fresh copy on every call): the user's file when
        `settings_path` is set (`finemem reproduce NAME --settings FILE`), else the shipped
        one."""
        if self.settings_path is not None:
            return _load_user_settings(Path(self.settings_path))
        return load_settings(self.settings_file)[0]

    def require(self, plan: dict, *keys: str) -> dict:
        """`plan` when every key in `keys` is set in it, else a `UserError` naming the settings
        file and the first missing key."""
        for key in keys:
            if not plan.get(key):
                raise UserError("missing", source=self.settings_source, field=key)
        return plan

    def run_configs(self, plan: dict, out: Path, edit=None) -> dict:
        """Run name -> validated `RunConfig` of each `plan["runs"]` entry merged over
        `plan["run"]`, its folder `out/<name>`; `edit(raw)` adjusts a raw config first."""
        cfgs = {}
        for name, over in plan["runs"].items():
            raw = merge(plan["run"], over or {})
            raw["run_dir"] = str(Path(out) / name)
            if edit is not None:
                edit(raw)
            cfgs[name] = self.parse_run(raw, source=f"{self.settings_source}: runs.{name}")
        return cfgs

    def parse_run(self, raw: dict, *, source: str):
        """The validated `RunConfig` of one run's raw config, `overrides` set first."""
        from finemem.config import parse_config, set_path

        for key, value in (self.overrides or {}).items():
            set_path(raw, key, value)
        return parse_config(raw, source=source)

    @abstractmethod
    def configs(self, out: Path) -> dict:
        """Run name -> validated `RunConfig` of every run the experiment trains under `out`."""

    @abstractmethod
    def run(self, out: Path, **opts) -> Any:
        """Train, audit and report; reruns resume."""


register_experiment = registrar(EXPERIMENTS, "experiment")


def get_experiment(name: str) -> Experiment:
    """The registered experiment `name`; an unknown name raises `UserError` with the closest
    match."""
    _load_builtin()
    if name not in EXPERIMENTS:
        raise unknown_name("experiment", name, EXPERIMENTS, field="experiment")
    return EXPERIMENTS[name]()


def experiment_names(*, reproducible: bool | None = None) -> list[str]:
    """Registered names, sorted; `reproducible=True` keeps those `finemem reproduce` runs."""
    _load_builtin()
    return sorted(n for n, cls in EXPERIMENTS.items()
                  if reproducible is None or cls.reproducible == reproducible)


def load_settings(filename: str) -> tuple[dict, str]:
    """(parsed YAML, its text) of a settings file shipped in this package."""
    try:
        text = resources.files(__name__).joinpath(filename).read_text("utf-8")
    except FileNotFoundError:
        raise UserError(f"experiment settings '{filename}' are not in the package "
                        "(finemem/experiments/)") from None
    return yaml.safe_load(text) or {}, text


def _load_user_settings(path: Path) -> dict:
    if not path.is_file():
        raise UserError("settings file not found", source=str(path))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        mark = getattr(e, "problem_mark", None)
        raise UserError(f"invalid YAML: {getattr(e, 'problem', e)}", source=str(path),
                        row=mark.line + 1 if mark else None) from None
    if not isinstance(raw, dict):
        raise UserError("the settings must be a mapping of keys", source=str(path))
    return raw


def _load_builtin() -> None:
    # Every module of this package registers what it defines on import; imported lazily so that
    # importing the registry (and the CLI) stays cheap until an experiment is looked up. An
    # experiment parses run configs, so the probes' settings are registered too.
    from finemem.audit.probes import load_probes

    load_probes()
    import_modules(__name__)


__all__ = ["EXPERIMENTS", "MACHINE_NOTE", "Experiment", "experiment_names", "get_experiment",
           "load_settings", "register_experiment", "with_machine_note"]
