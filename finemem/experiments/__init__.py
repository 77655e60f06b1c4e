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


# ... and under a real model's (`reproduce --model`), whose weights every machine shares.
REAL_MODEL_NOTE = ("The model's weights are a quantized checkpoint dequantized to float32 "
                   "(docs/REAL_MODELS.md), the same on every machine; training on another "
                   "machine or thread count still sums floats in another order, so its "
                   "figures differ in the last digits and, near a threshold, a verdict may too. "
                   "What was scaled down to fit 2 CPU cores is in the experiment's "
                   "`.real.yaml` settings (finemem/experiments/).")


def render_markdown(template: str, *, model: str | None = None, **context) -> str:
    """An experiment's Markdown report from its Jinja2 template in templates/ (no HTML
    escaping: Markdown; `machine_note` and `model`, the real model of `reproduce --model` or
    None, are passed in)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("finemem.experiments", "templates"),
                      autoescape=False, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True, undefined=StrictUndefined)
    note = REAL_MODEL_NOTE if model else MACHINE_NOTE
    return env.get_template(template).render(machine_note=note, model=model, **context)


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
    model: str | None = None              # `reproduce --model`: a real model for every run
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
        if self.model:
            return load_settings(self.real_settings_file, model=True)[0]
        return load_settings(self.settings_file)[0]

    @property
    def real_settings_file(self) -> str:
        """The shipped settings sized for a real ~100M-parameter model on a CPU
        (`lora_vs_full.yaml` -> `lora_vs_full.real.yaml`), used under `--model`."""
        return self.settings_file.removesuffix(".yaml") + ".real.yaml"

    @property
    def label(self) -> str:
        """'' for the built-in models, else a short name of `--model` for the doc section,
        run folders and figures ("smollm2-135m"; a path gives its last part)."""
        if not self.model:
            return ""
        return "".join(c if c.isalnum() or c in "-_." else "-"
                       for c in Path(self.model.rstrip("/")).name.removesuffix(".gguf"))

    def section(self) -> str:
        """The doc section this experiment writes: one per model, so the built-in runs'
        section and each real model's sit side by side."""
        return f"experiment:{self.name}" + (f"@{self.label}" if self.label else "")

    def out_dir(self, out: Path) -> Path:
        """Where the runs go: `out`, or `out/<model>` under `--model`."""
        return Path(out) / self.label if self.label else Path(out)

    def figure(self, doc: Path, stem: str) -> Path:
        """The PNG beside `doc` (in img/), one per model."""
        return Path(doc).parent / "img" / (stem + (f"-{self.label}" if self.label else "")
                                           + ".png")

    def set_model(self, raw: dict) -> dict:
        """A raw run config with `--model` in place of its model (when given)."""
        if self.model:
            raw["model"] = self.model
        return raw

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
            self.set_model(raw)
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


def load_settings(filename: str, *, model: bool = False) -> tuple[dict, str]:
    """(parsed YAML, its text) of a settings file shipped in this package; `model`: the file
    is the real-model variant `--model` asked for."""
    try:
        text = resources.files(__name__).joinpath(filename).read_text("utf-8")
    except FileNotFoundError:
        if model:
            raise UserError(f"this experiment ships no real-model settings ({filename}); give "
                            "your own with --settings FILE (its runs name the model)",
                            field="--model") from None
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
