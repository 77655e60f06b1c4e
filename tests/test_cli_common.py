"""The options shared by the commands that train or audit are declared once
(`finemem.cli.common`) and every such command takes all of them, spelled, typed, defaulted and
explained the same way; a command outside that set that takes one of them takes it the same
way too."""

import typer.main

from finemem.cli import app
from finemem.cli.common import RUNNERS, SHARED


def _commands(group, path=()):
    for name, cmd in getattr(group, "commands", {}).items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, path + (name,))
        else:
            yield " ".join(path + (name,)), cmd


def _shared(cmd) -> dict:
    """flag -> (all its spellings, default, help, multiple) of the shared options `cmd` has."""
    out = {}
    for p in cmd.params:
        opts = list(p.opts) + list(getattr(p, "secondary_opts", []))
        for flag in SHARED:
            if flag in opts:
                out[flag] = (tuple(sorted(opts)), p.default, p.help, p.multiple)
    return out


def test_every_runner_takes_every_shared_option_the_same_way():
    cmds = dict(_commands(typer.main.get_command(app)))
    assert set(RUNNERS) <= set(cmds)
    decl = {name: _shared(cmds[name]) for name in RUNNERS}
    for name in RUNNERS:
        assert set(decl[name]) == set(SHARED), (name, sorted(decl[name]))
    reference = decl[RUNNERS[0]]
    for name, found in decl.items():
        assert found == reference, name
    for flag in ("--progress", "--quiet"):
        assert any(f"--no-{flag[2:]}" in o for o in reference[flag][0])
    for name, cmd in cmds.items():  # anywhere else, the same declaration
        for flag, d in _shared(cmd).items():
            assert d == reference[flag], (name, flag)


def test_shared_options_parse_on_every_runner():
    """Each runner accepts the four options together (parsing stops before any work: --help
    after them)."""
    from typer.testing import CliRunner

    runner = CliRunner()
    args = {"train": ["--config", "x.yaml"], "audit": ["runs/x"], "demo": [],
            "sweep": ["--config", "x.yaml"]}
    for name in RUNNERS:
        r = runner.invoke(app, [name, *args[name], "--device", "cpu", "--no-progress",
                                "--quiet", "--set", "training.epochs=1", "--help"])
        assert r.exit_code == 0, (name, r.output)
