"""The options shared by the commands that train or run a model are declared once
(`finemem.cli.common`) and every such command takes all of them, spelled, typed, defaulted and
explained the same way; a command outside that set that takes one of them takes it the same
way too. Every command is walked: each is a runner or named below with why it is not, so a
new command must be placed."""

import typer.main
from typer.testing import CliRunner

from finemem.cli import app
from finemem.cli.common import RUNNERS, SHARED


# Commands that run no model, with why: they read stores, write files or move weights only.
NOT_RUNNERS = {
    "probes": "lists the probes", "attacks": "lists the attacks",
    "recommend": "reads the store", "report": "reads the store", "export": "reads the store",
    "trajectories": "reads the store", "compare": "reads the stores", "risk": "reads the store",
    "canaries show": "reads the store", "doctor": "reports what is installed",
    "merge": "averages weight files (no forward pass, no config)",
    "export-model": "copies or merges weight files (no forward pass, no config)",
    "config example": "prints a config", "config check": "validates a config",
    "base ship": "copies a built base into the package (it refuses to build one)",
    "base list": "lists the cached bases", "canaries add": "writes data files",
    "models get": "fetches weight files", "models list": "lists the named models",
}


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


def test_every_command_is_placed():
    cmds = set(dict(_commands(typer.main.get_command(app))))
    assert not set(RUNNERS) & set(NOT_RUNNERS)
    assert cmds == set(RUNNERS) | set(NOT_RUNNERS), (
        sorted(cmds - set(RUNNERS) - set(NOT_RUNNERS)), sorted(set(RUNNERS) | set(NOT_RUNNERS)
                                                             - cmds))


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
    runner = CliRunner()
    args = {"train": ["--config", "x.yaml"], "audit": ["runs/x"], "demo": [],
            "sweep": ["--config", "x.yaml"], "reproduce": ["over-memorization"],
            "base build": []}
    assert set(args) == set(RUNNERS)
    for name in RUNNERS:
        r = runner.invoke(app, [*name.split(), *args[name], "--device", "cpu", "--no-progress",
                                "--quiet", "--set", "training.epochs=1", "--help"])
        assert r.exit_code == 0, (name, r.output)


def test_reproduce_passes_the_shared_options_to_every_run(monkeypatch, tmp_path):
    """`finemem reproduce NAME --set K=V --device D --no-progress --quiet`: each run config
    the experiment builds has the keys; its train and audit calls get the progress flag."""
    from finemem.experiments import EXPERIMENTS, experiment_names

    seen = {}

    def run(self, out, **_):
        seen["cfgs"] = self.configs(out)
        seen["progress"], seen["quiet"] = self.progress, self.quiet

    for name in experiment_names(reproducible=True):
        monkeypatch.setattr(EXPERIMENTS[name], "run", run)
        r = CliRunner().invoke(app, ["reproduce", name, "--out", str(tmp_path), "--device",
                                     "cpu", "--set", "training.seed=7", "--no-progress",
                                     "--quiet"])
        assert r.exit_code == 0, (name, r.output)
        assert seen["cfgs"] and (seen["progress"], seen["quiet"]) == (False, True), name
        for cfg in seen["cfgs"].values():
            assert (cfg.device, cfg.training.seed) == ("cpu", 7), name


def test_base_build_set_keys_make_another_base():
    """`finemem base build --set KEY=V` changes the spec (so the cache folder); an unknown key
    or a value of the wrong kind is one clear line naming the keys or an example."""
    import pytest

    from finemem.errors import UserError
    from finemem.models.base import SIZES, build_spec

    spec = build_spec("test", {"steps": 80})
    assert spec["size"] == {**SIZES["test"], "steps": 80}
    assert build_spec("test") != spec and build_spec("test")["size"] == SIZES["test"]
    with pytest.raises(UserError, match="keys: hidden, layers"):
        build_spec("test", {"stepz": 80})
    with pytest.raises(UserError, match=r"whole number, e.g. steps=40"):
        build_spec("test", {"steps": 2.5})
    r = CliRunner().invoke(app, ["base", "build", "--size", "test", "--set", "nope=1"])
    assert r.exit_code != 0 and "not a key of a base build" in str(r.exception)
