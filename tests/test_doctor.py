"""`finemem doctor`: reports versions, device, cache and built-in models, and names what is
missing for optional features, without building or writing anything."""

import json

from typer.testing import CliRunner

from finemem.cli import app

runner = CliRunner()


def test_doctor_json(tmp_path, monkeypatch):
    monkeypatch.setenv("FINEMEM_HOME", str(tmp_path))
    monkeypatch.setattr("shutil.which", lambda name: None)  # no browser on this "machine"
    r = runner.invoke(app, ["doctor", "--json"])
    assert r.exit_code == 0, r.output
    found = json.loads(r.output)
    assert found["packages"]["torch"] and found["packages"]["transformers"]
    assert found["device"]["auto"] in ("cpu", "cuda", "mps")
    assert found["cache"]["path"] == str(tmp_path) and found["cache"]["writable"]
    assert found["builtin_models"]["test"]["status"].startswith("not built")
    assert "browser" in found["missing"] and "chromium" in found["missing"]["browser"]["install"]
    assert list(tmp_path.iterdir()) == []  # nothing built or written


def test_doctor_text():
    r = runner.invoke(app, ["doctor"])
    assert r.exit_code == 0, r.output
    assert "cache folder:" in r.output and "builtin:test:" in r.output


# commands whose authors are still adding their usage example (see issue 12)
PENDING_EXAMPLES: set[str] = set()


def test_every_command_help_has_an_example():
    import typer.main

    root = typer.main.get_command(app)
    assert "Example:" in (root.help or "")
    missing = []
    for name, cmd in root.commands.items():
        subs = getattr(cmd, "commands", None) or {"": cmd}
        for sub, c in subs.items():
            full = f"{name} {sub}".strip()
            if "Example:" not in (c.help or "") and full not in PENDING_EXAMPLES:
                missing.append(full)
    assert not missing, f"add 'Example: finemem ...' to the help of: {missing}"


def test_every_registered_metric_is_documented():
    import re
    from pathlib import Path

    from finemem.metrics import metric_names

    doc = (Path(__file__).resolve().parent.parent / "docs" / "METRICS.md").read_text("utf-8")
    sections = dict(re.findall(r"^### `([a-z0-9_]+)`\n(.*?)(?=^#|\Z)", doc, re.M | re.S))
    missing = [m for m in metric_names() if m not in sections]
    assert not missing, f"docs/METRICS.md has no '### `name`' section for {missing}"
    for name in metric_names():
        for part in ("direction:", "formula:", "default:", "source:"):
            assert part in sections[name], f"docs/METRICS.md, {name}: no '{part}' line"


def test_version_option():
    from finemem import __version__

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"finemem {__version__}"
