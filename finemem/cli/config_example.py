"""`finemem config example`: a commented run config generated from the config models, so it
has every settable key with its default and description (`Field(description=...)`), every
probe's section included.

    example_yaml()             # what `finemem config example` prints
    example_yaml(full=True)    # the optional sections (canaries, non-members) switched on

finemem/configs/example.yaml is this text, checked in (tests/test_config.py regenerates it and
fails when it is stale or when a field is missing).
"""

from __future__ import annotations

import textwrap
import typing

import yaml
from pydantic import BaseModel

COL = 34  # where comments start
WIDTH = 100

HEADER = """\
# finemem run configuration (generated from finemem.config and each probe's Config by
# `finemem config example`). Every key is checked; an unknown key is an error.
# CLI flags override this file, e.g. `finemem train --config run.yaml --lr 3e-4`
# or any key with `--set training.epochs=5`. Lines starting '#:' are optional sections:
# remove the 'null' line above them and the '#: ' to use them.
"""

# Values shown instead of the default: required keys, and examples that say more than {}.
EXAMPLES = {
    "run_dir": "runs/arith-full",
    "data.train": {"source": "builtin:arith", "split": "train", "n": 500},
    "data.eval": {"test": {"source": "builtin:arith", "split": "test", "n": 300},
                  "ood": {"source": "builtin:arith", "split": "ood", "n": 200}},
    "audit.nonmembers": {"source": "data/held_out.jsonl"},
}


def _flow(v) -> str:
    text = yaml.safe_dump(v, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def _line(indent: int, key: str, value: str | None, desc: str, prefix: str = "") -> list[str]:
    head = f"{prefix}{' ' * indent}{key}:" + (f" {value}" if value is not None else "")
    if not desc:
        return [head]
    width = max(30, WIDTH - max(COL, len(head) + 1) - 2)
    parts = textwrap.wrap(" ".join(desc.split()), width) or [""]
    pad = max(COL, len(head) + 1)
    out = [head.ljust(pad) + "# " + parts[0]]
    out += [(prefix + " " * (pad - len(prefix))) + "# " + p for p in parts[1:]]
    return out


def _model_of(annotation) -> type[BaseModel] | None:
    """The model of a field typed `Model` or `Model | None`."""
    for t in (annotation, *typing.get_args(annotation)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def _plain(v):
    return v.model_dump(mode="json") if isinstance(v, BaseModel) else v


def _fields(items, path: str, indent: int, full: bool, prefix: str = "",
            values: dict | None = None) -> list[str]:
    """The lines of fields `items` ((name, FieldInfo) pairs) under `path`. `values`: example
    values of this section (a required field without one is left out)."""
    from finemem.config import AuditConfig

    out: list[str] = []
    for name, f in items:
        dotted, desc, ann = path + name, f.description or "", f.annotation
        if typing.get_origin(ann) is dict and dotted in EXAMPLES:  # named sources (data.eval)
            out += _line(indent, name, None, desc, prefix)
            out += [f"{prefix}{' ' * (indent + 2)}{k}: {_flow(v)}"
                    for k, v in EXAMPLES[dotted].items()]
            continue
        sub = _model_of(ann)
        if sub is None:
            if values is not None and name in values:
                v = values[name]
            elif dotted in EXAMPLES:
                v = EXAMPLES[dotted]
            elif f.is_required():
                continue
            else:
                v = _plain(f.get_default(call_default_factory=True))
            out += _line(indent, name, _flow(v), desc, prefix)
            continue
        if not f.is_required() and f.get_default(call_default_factory=True) is None:
            # an optional section, off by default: its keys shown commented ('#: ')
            if not full:
                out += _line(indent, name, "null", desc, prefix)
            p = prefix if full else "#: "
            out += _line(indent, name, None, desc if full else "", p)
            out += _fields(sub.model_fields.items(), dotted + ".", indent + 2, full, p,
                           EXAMPLES.get(dotted))
            continue
        out += _line(indent, name, None, desc, prefix)
        out += _fields(sub.model_fields.items(), dotted + ".", indent + 2, full, prefix,
                       EXAMPLES.get(dotted))
        if sub is AuditConfig:
            out += _probe_sections(dotted + ".", indent + 2, full, prefix)
    return out


def _probe_sections(path: str, indent: int, full: bool, prefix: str) -> list[str]:
    from finemem.audit.probes import PROBES, load_probes

    load_probes()
    out: list[str] = []
    for name in sorted(PROBES):
        p = PROBES[name]
        out += _line(indent, name, None, p.description, prefix)
        out += _fields(p.Config.model_fields.items(), f"{path}{name}.", indent + 2, full, prefix)
    return out


def example_yaml(*, full: bool = False) -> str:
    """The example run config (see the module docstring)."""
    from finemem.config import RunConfig

    body = []
    for line in _fields(RunConfig.model_fields.items(), "", 0, full):
        if line.startswith(("data:", "training:", "audit:")):
            body.append("")  # a blank line before each section
        body.append(line)
    return HEADER + "\n" + "\n".join(body).strip("\n") + "\n"
