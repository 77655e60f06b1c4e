"""The layer contracts in pyproject.toml ([tool.importlinter]) hold: `lint-imports` finds every
import (function-level ones too) and fails on one that goes up a layer or a forbidden edge, so
docs/ARCHITECTURE.md's table is what the code does."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def _package_graph() -> dict[str, set[str]]:
    """finemem's top-level packages (and modules), each with those it imports: every import,
    function-level ones too."""
    import grimp

    g = grimp.build_graph("finemem")
    top = lambda m: ".".join(m.split(".")[:2])  # noqa: E731
    out: dict[str, set[str]] = {}
    for m in g.modules:
        if top(m) == "finemem":
            continue
        out.setdefault(top(m), set()).update(
            top(i) for i in g.find_modules_directly_imported_by(m)
            if top(i) not in (top(m), "finemem"))
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle in `graph` (its nodes in order, the first repeated last), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        for nxt in sorted(graph.get(node, ())):
            found = visit(nxt, path + [node])
            if found:
                return found
        done.add(node)
        return None

    return next((c for c in map(lambda n: visit(n, []), sorted(graph)) if c), None)


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_circle_between_packages():
    """No package reaches itself through the packages it imports (no two import each other,
    nor any longer circle), and the layer contract lists no exception."""
    import tomllib

    assert _cycle(_package_graph()) is None, _cycle(_package_graph())
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert not any(c.get("ignore_imports") for c in contracts["contracts"])


def test_a_config_is_parsed_with_the_probes_settings_registered():
    """The config layer knows what an audit section is, not the probes (they sit above it):
    parsing a run config before `load_probes()` is a programming error that says so, rather
    than every audit section read as an unknown key."""
    code = ("from finemem.config import parse_config\n"
            "raw = {'run_dir': 'x', 'data': {'train': {'source': 'builtin:arith'}}}\n"
            "try:\n    parse_config(raw)\nexcept RuntimeError as e:\n    print(e)\n"
            "from finemem.audit.probes import load_probes\nload_probes()\n"
            "print(type(parse_config(raw).audit.section('overmem')).__name__)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.splitlines()
    assert "load_probes()" in first
    assert second.endswith("Config")
