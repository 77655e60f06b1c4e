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


def test_no_cycle_between_packages():
    """No two packages import each other, but for the two listed exceptions (config reads the
    probe registry to validate audit sections; the SPV-MIA reference is fine-tuned by the
    train package)."""
    import grimp

    g = grimp.build_graph("finemem")
    top = lambda m: ".".join(m.split(".")[:2])  # noqa: E731
    edges = {(top(m), top(i)) for m in g.modules for i in g.find_modules_directly_imported_by(m)
             if top(m) != top(i) and top(m) != "finemem" and top(i) != "finemem"}
    cycles = {tuple(sorted(e)) for e in edges if (e[1], e[0]) in edges}
    assert cycles == {("finemem.audit", "finemem.config"), ("finemem.audit", "finemem.train")}, \
        cycles
