"""`finemem reproduce mitigations` at a tiny size (builtin:test), the sweep's --dp-epsilons /
--dedup shortcuts, and `finemem compare` lining mitigations up."""

from pathlib import Path

import pytest
import yaml

from finemem.experiments import get_experiment
from finemem.experiments.sweep import cell_names, parse_grid, shortcut_specs


def test_sweep_shortcuts_grid_dp_and_dedup():
    specs = shortcut_specs(dp_epsilons="1,8,inf", dedup="none,near")
    grid = parse_grid(specs)
    assert grid == {"training.dp": [{"epsilon": 1}, {"epsilon": 8}, None],
                    "data.dedup": ["none", "near"]}
    assert len(cell_names(grid)) == 6


def tiny_settings(tmp_path: Path) -> Path:
    s = get_experiment("mitigations").settings()
    s["run"]["model"] = "builtin:test"
    s["run"]["data"]["train"]["n"] = 24
    s["run"]["data"]["eval"]["test"]["n"] = 40
    s["run"]["data"]["duplication"]["times"] = 4
    s["run"]["data"]["canaries"].update(per_tier=10, twins=40)
    s["run"]["training"].update(epochs=2, lr=3e-3)
    s["run"]["audit"]["membership"].update(members=24, nonmembers=40, n_boot=100)
    s["run"]["audit"]["canaries"]["n_boot"] = 100
    for over in s["runs"].values():  # the quick accountant for the test
        if over and "dp" in over.get("training", {}):
            over["training"]["dp"]["accountant"] = "rdp"
    path = tmp_path / "mitigations.yaml"
    path.write_text(yaml.safe_dump(s))
    return path


@pytest.mark.integration
def test_reproduce_mitigations_tiny(tmp_path):
    import torch
    from typer.testing import CliRunner

    from finemem.analysis.tradeoff import tradeoff_row
    from finemem.cli import app

    torch.set_num_threads(1)
    doc = tmp_path / "MITIGATIONS.md"
    r = CliRunner().invoke(app, ["reproduce", "mitigations", "--out", str(tmp_path / "runs"),
                                 "--doc", str(doc), "--settings", str(tiny_settings(tmp_path))])
    assert r.exit_code == 0, r.output
    text = doc.read_text()
    for label in ("no mitigation", "early checkpoint", "LoRA", "dedup (near)", "DP eps=8",
                  "DP eps=1"):
        assert f"| {label} |" in text
    assert "DP caveat" in text and "group of" in text  # the repeats break per-row DP
    assert (tmp_path / "img" / "mitigations.png").is_file()
    runs = tmp_path / "runs"
    for name in ("dp8", "dp1"):
        row = tradeoff_row(runs / name, "final")
        assert row["eps_promised"] is not None and row["eps_lower_bound"] is not None
        assert row["eps_lower_bound"]["value"] <= row["eps_promised"]
    dedup = [x for x in (runs / "dedup" / "manifest.jsonl").read_text().splitlines()
             if '"dedup"' in x]
    assert len(dedup) == 6  # the 6 repeated rows (a quarter of 24) lost their copies
    r = CliRunner().invoke(app, ["compare", str(runs / "none"), str(runs / "dp8"),
                                 str(runs / "dedup"), "--out", str(tmp_path / "cmp")])
    assert r.exit_code == 0, r.output
    assert "epsilon promised" in r.output and (tmp_path / "cmp" / "tradeoff.csv").is_file()
