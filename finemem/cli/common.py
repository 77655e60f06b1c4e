"""Options shared by the commands that train or audit (`finemem train | audit | demo | sweep`):
one definition each, so every command spells and explains them the same way
(tests/test_cli_common.py walks the commands).

    def command(device: str = common.device(), progress: bool = common.progress(),
                quiet: bool = common.quiet(), set_: list[str] = common.sets()): ...

`--set KEY=VALUE` overrides any config key (`finemem audit` takes audit.* keys only: a run's
training is fixed); `--device` overrides the config's `device`.
"""

from __future__ import annotations

import typer

# The commands that take every shared option.
RUNNERS = ("train", "audit", "demo", "sweep")
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
