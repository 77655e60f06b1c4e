"""Options shared by the commands that train or run a model (`finemem train | audit | demo |
sweep | reproduce | base build`):
one definition each, so every command spells and explains them the same way
(tests/test_cli_common.py walks the commands).

    def command(device: str = common.device(), progress: bool = common.progress(),
                quiet: bool = common.quiet(), set_: list[str] = common.sets()): ...

`--set KEY=VALUE` overrides any config key (`finemem audit` takes audit.* keys only: a run's
training is fixed); `--device` overrides the config's `device`.
"""

from __future__ import annotations

import typer

# The commands that take every shared option: every one that trains or runs a model.
RUNNERS = ("train", "audit", "demo", "sweep", "reproduce", "base build")
SHARED = ("--device", "--progress", "--quiet", "--set")


def device():
    return typer.Option(None, "--device", help="auto, cpu, cuda or mps (default: the "
                                               "config's device, else auto)")


def progress():
    return typer.Option(True, "--progress/--no-progress",
                        help="progress bars (without a terminal: a line per step)")


def quiet():
    return typer.Option(False, "--quiet/--no-quiet",
                        help="print only the result lines, no tables")


def sets():
    return typer.Option([], "--set", help="a config key for this command, KEY=VALUE (a YAML "
                                          "value), e.g. training.epochs=5 or "
                                          "audit.extraction.prefix_tokens=32; repeatable")


def config_overrides(sets: list[str], device: str | None) -> dict:
    """The config keys of `--set` and `--device` (a command that passes them on to the run
    configs it builds)."""
    from finemem.cli.train_cmd import parse_sets

    return {**parse_sets(sets), **({"device": device} if device else {})}
