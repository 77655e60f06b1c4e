"""`finemem sweep`: train and audit a grid over any config keys, one run folder per cell, and
tabulate when each setting enters over-memorization and what it reaches.

    finemem sweep --config run.yaml --grid training.lr=1e-4,3e-4 --grid training.method=full,lora
    run_sweep(config, grid={"training.lr": [1e-4, 3e-4], "training.method": ["full", "lora"]},
              out=Path("runs/sweep"))

Shortcuts (`finemem sweep --methods full,lora,head --ranks 8,64 --sizes test,tiny
--duplication 1,4,16 --probes relaxed`) grid training.method, training.lora.r / alpha, the
model (built-in sizes, or `--models` with model folders) and data.duplication.times (the same
seeded subset, data.duplication.fraction of the examples, repeated that many times per epoch;
the manifest records it). `finemem compare SWEEP_DIR` lines the cells up.

Grid values are YAML scalars (`1e-4`, `full`, `true`, `null`, `[2, 2]`). The cells are the
product of the grids, the first grid varying slowest; each is a normal run folder named from
its values (`lr-0.0001_method-full`), so an interrupted sweep resumes where it stopped. The
epoch axis is each run's checkpoint trajectory (one checkpoint per epoch by default), so a
cell answers both "which setting" and "how many epochs". A graded test set gives best accuracy,
over-memorization onset and the recommended checkpoint's accuracy; an ungraded one (free text)
gives the test-PPL curve instead (lowest test PPL, the recommended checkpoint's test PPL).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from finemem.errors import UserError

_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def parse_scalar(text: str) -> Any:
    """A grid value as YAML reads it, except that `1e-4` is a number (YAML 1.1 wants `1.0e-4`)."""
    text = text.strip()
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError as e:
        raise UserError(f"grid value {text!r} is not valid YAML: {getattr(e, 'problem', e)}",
                        field="grid") from None
    if isinstance(value, str) and _NUMBER.match(value):
        return float(value)
    return value


def _split_values(text: str) -> list[str]:
    """Split on commas outside brackets and braces, so `[2, 2],[3, 3]` is two values."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]


def parse_grid(specs: list[str]) -> dict[str, list]:
    """`["training.lr=1e-4,3e-4", "training.method=full,lora"]` -> key -> values, in order."""
    grid: dict[str, list] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise UserError(f"grid '{spec}' is not KEY=V1,V2,... (e.g. training.lr=1e-4,3e-4)",
                            field="grid")
        if key in grid:
            raise UserError(f"'{key}' is gridded twice; give all its values in one --grid",
                            field="grid")
        if key == "run_dir":
            raise UserError("run_dir is set per cell (under --out); it cannot be gridded",
                            field="grid")
        vals = [parse_scalar(v) for v in _split_values(values)]
        if len(set(map(repr, vals))) < len(vals):
            raise UserError(f"'{key}' has a repeated value", field="grid")
        grid[key] = vals
    return grid


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def cell_names(grid: dict[str, list]) -> list[tuple[str, dict]]:
    """(folder name, {key: value}) of every cell, the first grid varying slowest. A name is
    `<last key part>-<value>` joined by `_` (the whole key where two grids share a last part),
    reduced to letters, digits and `.+-`; names are unique."""
    leaves = [k.rsplit(".", 1)[-1] for k in grid]
    labels = [leaf if leaves.count(leaf) == 1 else k for k, leaf in zip(grid, leaves)]
    def safe(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-")

    out, seen = [], set()
    for combo in itertools.product(*grid.values()):
        name = "_".join(f"{safe(lab)}-{safe(_fmt(v))}" for lab, v in zip(labels, combo))
        name = name.lstrip(".-") or "cell"
        base, i = name, 2
        while name in seen:
            name, i = f"{base}-{i}", i + 1
        seen.add(name)
        out.append((name, dict(zip(grid, combo))))
    return out


@dataclass
class Cell:
    values: dict            # grid key -> value
    name: str
    run_dir: str
    graded: bool
    best_acc: float | None  # best test accuracy (graded only)
    best_epoch: float       # epoch of the best accuracy, or of the lowest test PPL
    min_test_ppl: float
    onset_epoch: float | None  # first over-memorized epoch, None if never (or ungraded)
    max_ppl_ratio: float
    recommended: str
    recommended_acc: float | None
    recommended_ppl: float


def cell_from_summary(s, values: dict, name: str) -> Cell:
    from finemem.analysis.summary import ACC, PPL

    ppl = s.column(PPL)
    rec = s.row(s.recommendation.name)
    onset = s.first("over-memorized")
    ratio = max(lab.ppl_ratio for lab in s.labels)
    if s.graded:
        acc = s.column(ACC)
        best = max(range(len(acc)), key=lambda i: acc[i])
        return Cell(values, name, str(s.run_dir), True, acc[best], s.rows[best].epoch,
                    min(ppl), None if onset is None else onset.epoch, ratio, rec.name,
                    rec.get(ACC), rec.get(PPL))
    low = min(range(len(ppl)), key=lambda i: ppl[i])
    return Cell(values, name, str(s.run_dir), False, None, s.rows[low].epoch, ppl[low], None,
                ratio, rec.name, None, rec.get(PPL))


def sweep_configs(config: Path, grid: dict[str, list], out: Path, *,
                  epochs: int | None = None, overrides: dict | None = None
                  ) -> list[tuple[str, dict, Any]]:
    """(name, values, validated RunConfig) of every cell, all checked before any training;
    `overrides` (--set, --device) apply to every cell, the grid's values over them."""
    from finemem.config import load_config

    if not grid:
        raise UserError("nothing to sweep: give --grid KEY=V1,V2 (or --lrs / --methods)",
                        field="grid")
    empty = [k for k, v in grid.items() if not v]
    if empty:
        raise UserError(f"'{empty[0]}' has no values: the grid would make zero cells",
                        field="grid")
    cells = []
    for name, values in cell_names(grid):
        over = {**(overrides or {}), **values, "run_dir": str(out / name)}
        if epochs:
            over["training.epochs"] = epochs
        cfg = load_config(config, overrides=over)
        dup = cfg.data.duplication
        if "data.duplication.times" in values and dup.times > 1 and dup.fraction == 0:
            raise UserError("duplication times > 1 repeats nothing while "
                            "data.duplication.fraction is 0; set the fraction of examples to "
                            "repeat (e.g. --grid data.duplication.fraction=0.5, or in the "
                            "config)", field="data.duplication.fraction")
        cells.append((name, values, cfg))
    return cells


# `finemem sweep` shortcuts: flag -> the config key it grids (values as for --grid).
SHORTCUTS = {"methods": "training.method", "lrs": "training.lr", "ranks": "training.lora.r",
             "alphas": "training.lora.alpha", "models": "model",
             "duplication": "data.duplication.times", "dedup": "data.dedup"}


def shortcut_specs(**flags: str | None) -> list[str]:
    """--grid specs of the shortcut flags that were given (`sizes` = built-in model sizes);
    a flag given with no values is refused (it would make zero cells)."""
    specs = []
    for flag, text in flags.items():
        if text is None:
            continue
        if not text.strip().strip(","):
            raise UserError(f"--{flag} gives no values: the grid would make zero cells",
                            field=flag)
        if flag == "sizes":
            specs.append("model=" + ",".join(f"builtin:{s.strip()}" for s in text.split(",")))
        elif flag == "dp_epsilons":  # issue 21 hook: inf = no DP (training.dp: null)
            specs.append("training.dp=" + ",".join(
                "null" if v.strip().lower() in ("inf", "none") else f"{{epsilon: {v.strip()}}}"
                for v in text.split(",") if v.strip()))
        else:
            specs.append(f"{SHORTCUTS[flag]}={text}")
    return specs


def run_sweep(config: Path, *, grid: dict[str, list], out: Path, epochs: int | None = None,
              probes: list[str] | None = None, console=None, overrides: dict | None = None,
              progress: bool = True, quiet: bool = False) -> list[Cell]:
    """Train and audit every cell (`probes`: what the audit runs, the likelihood probe always
    among them; None = the default probes). sweep.json is rewritten after each finished cell,
    so an interrupted sweep lists what it has and a rerun resumes at the unfinished cell."""
    from rich.console import Console

    from finemem.audit import audit_run, summarize
    from finemem.train import train

    console = console or Console()
    if probes is not None and "likelihood" not in probes:
        probes = ["likelihood", *probes]  # the sweep table reads test PPL
    todo = sweep_configs(config, grid, out, epochs=epochs, overrides=overrides)  # all checked
    cells = []
    out.mkdir(parents=True, exist_ok=True)
    for name, values, cfg in todo:
        console.rule(", ".join(f"{k}={_fmt(v)}" for k, v in values.items()))
        train(cfg, progress=progress)
        audit_run(cfg.run_dir, probes=probes, progress=progress)
        cells.append(cell_from_summary(summarize(cfg.run_dir), values, name))
        (out / "sweep.json").write_text(json.dumps([_jsonable(asdict(c)) for c in cells],
                                                   indent=1))
    if not console.is_terminal:
        console.width = max(console.width, 120)  # logs and pipes: do not squeeze the table
    if not quiet:
        console.print(sweep_table(cells, grid))
    console.print(advice(cells))
    return cells


def _jsonable(d: dict) -> dict:
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in d.items()}


def _f(v: float | None, digits: int = 3) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def sweep_table(cells: list[Cell], grid: dict[str, list]):
    from rich.table import Table

    graded = all(c.graded for c in cells)
    t = Table(title="Sweep: when each setting enters over-memorization" if graded else
              "Sweep: test PPL of each setting (ungraded test set: no stages)")
    leaves = [k.rsplit(".", 1)[-1] for k in grid]
    for k, leaf in zip(grid, leaves):
        t.add_column(leaf if leaves.count(leaf) == 1 else k)
    if graded:
        cols = ("best acc", "at epoch", "over-memorized from epoch", "max PPL / running min",
                "recommended", "its acc")
    else:
        cols = ("min test PPL", "at epoch", "max PPL / running min", "recommended",
                "its test PPL")
    for col in cols:
        t.add_column(col)
    for c in cells:
        vals = [_fmt(c.values[k]) for k in grid]
        if graded:
            t.add_row(*vals, _f(c.best_acc), f"{c.best_epoch:g}",
                      "never" if c.onset_epoch is None else f"{c.onset_epoch:g}",
                      f"{c.max_ppl_ratio:.2f}", c.recommended, _f(c.recommended_acc))
        else:
            t.add_row(*vals, _f(c.min_test_ppl), f"{c.best_epoch:g}", f"{c.max_ppl_ratio:.2f}",
                      c.recommended, _f(c.recommended_ppl))
    return t


def advice(cells: list[Cell]) -> str:
    """The setting to use. Graded: the best recommended accuracy, ties (to 2 decimals) going to
    the setting that enters over-memorization latest (or never). Ungraded: the lowest test PPL
    of the recommended checkpoint."""
    if all(c.graded for c in cells):
        def key(c: Cell):
            return (round(c.recommended_acc, 2),
                    math.inf if c.onset_epoch is None else c.onset_epoch)
        best = max(cells, key=key)
        onset = ("never enters over-memorization" if best.onset_epoch is None else
                 f"enters over-memorization at epoch {best.onset_epoch:g}")
        what = f"accuracy {best.recommended_acc:.3f}; {onset}"
    else:
        best = min(cells, key=lambda c: c.recommended_ppl)
        what = f"test PPL {best.recommended_ppl:.3f}; ungraded test set, so no stages"
    title = "Learning-rate recommendation" if "training.lr" in best.values else \
        "Sweep recommendation"
    setting = ", ".join(f"{k.rsplit('.', 1)[-1]}={_fmt(v)}" for k, v in best.values.items())
    return f"{title}: {setting} (recommended checkpoint {best.recommended}, {what})."


__all__ = ["Cell", "SHORTCUTS", "advice", "cell_from_summary", "cell_names", "parse_grid",
           "parse_scalar", "run_sweep", "shortcut_specs", "sweep_configs", "sweep_table"]
