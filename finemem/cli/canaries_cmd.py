"""`finemem canaries add CONFIG` (plant canaries in the next training run) and
`finemem canaries show RUN_DIR` (what came back, per tier and checkpoint).

    finemem canaries add run.yaml --tiers 1,4,16 --per-tier 4 --twins 100
    finemem train --config run.yaml && finemem audit RUN_DIR
    finemem canaries show RUN_DIR
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

canaries_app = typer.Typer(no_args_is_help=True, help="Plant canaries in a run's training data "
                                                       "and see which come back.")


def _ints(text: str, field: str) -> list[int]:
    from finemem.errors import UserError

    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"expected comma-separated whole numbers, got '{text}'",
                        field=field) from None


@canaries_app.command("add")
def add(config: Path,
        families: str = typer.Option("random,record,highppl", help="random, record, highppl"),
        tiers: str = typer.Option("1,4,16", help="times per epoch each canary of a tier is seen"),
        per_tier: int = typer.Option(4, help="canaries per family and tier"),
        twins: int = typer.Option(100, help="never-inserted controls per family (>= 100 for a "
                                            "TPR at 1% FPR)"),
        seed: int = typer.Option(0, help="which canaries are drawn"),
        inclusion: str = typer.Option("tiers", help="tiers: the canaries in, twins out; half: "
                                      "each candidate in with probability 1/2, for the "
                                      "one-run privacy audit (an epsilon lower bound)"),
        out: Optional[Path] = typer.Option(None, help="write the config here (default: CONFIG "
                                                      "itself; comments are not kept)")) -> None:
    """Add a `data.canaries` section (and the `canaries` probe to `audit.probes`) to a run
    config; `finemem train` then plants the canaries and `finemem audit` measures them.

    Example: finemem canaries add run.yaml && finemem train --config run.yaml"""
    import yaml

    from finemem.audit.probes import resolve_probes
    from finemem.config import load_config, parse_config
    from finemem.errors import UserError
    from finemem.io import write_text_atomic

    load_config(config)  # the file itself is valid
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw.setdefault("data", {})["canaries"] = {
        "families": [f.strip() for f in families.split(",") if f.strip()],
        "tiers": _ints(tiers, "--tiers"), "per_tier": per_tier, "twins": twins, "seed": seed}
    if inclusion != "tiers":  # issue 21 hook: validated with the rest below
        raw["data"]["canaries"]["inclusion"] = inclusion
    audit = raw.setdefault("audit", {}) or {}
    raw["audit"] = audit
    probes = audit.get("probes") or resolve_probes(None)
    if "canaries" not in probes:
        audit["probes"] = list(probes) + ["canaries"]
    cfg = parse_config(raw, source=str(config))  # tier <= 0, unknown family: one line, exit 2
    run_dir = Path(cfg.run_dir)
    if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()) \
            and not (run_dir / "canaries.jsonl").is_file():
        raise UserError(f"run_dir {run_dir} was already trained without canaries; canaries "
                        "change the training data, so set a new run_dir in the config (or "
                        "retrain this one with `finemem train --force`)", source=str(config),
                        field="run_dir")
    target = out or config
    write_text_atomic(target, yaml.safe_dump(raw, sort_keys=False))
    c = cfg.data.canaries
    n = c.per_tier * len(c.tiers) * len(c.families)
    if c.inclusion == "half":
        m = (c.per_tier * len(c.tiers) + c.twins) * len(c.families)
        typer.echo(f"wrote {target}: {m} candidate canaries, each inserted with probability "
                   f"1/2 (seeded), for the one-run privacy audit; `finemem audit` reports the "
                   f"epsilon lower bound")
        typer.echo(f"next: finemem train --config {target} && finemem audit {cfg.run_dir}")
        return
    typer.echo(f"wrote {target}: {n} canaries ({c.per_tier} per family and tier; families "
               f"{', '.join(c.families)}; tiers {', '.join(map(str, c.tiers))} times per "
               f"epoch) and {c.twins * len(c.families)} twins; they are drawn at "
               f"`finemem train` (the high-perplexity ones scored by the base model) and "
               f"written to RUN_DIR/canaries.jsonl")
    typer.echo(f"next: finemem train --config {target} && finemem audit {cfg.run_dir}")


@canaries_app.command("show")
def show(run_dir: Path, attack: str = typer.Option("loss", help="attack for AUC / TPR")) -> None:
    """Per tier and checkpoint: exposure, greedy-extraction rate and the attack's TPR at 1%
    FPR against the twins, each with its 95% interval (from `finemem audit`).

    Example: finemem canaries show runs/my-run"""
    from rich.console import Console

    from finemem.data.canaries import read_canaries
    from finemem.errors import UserError
    from finemem.report.sections import RunData
    from finemem.report.sections.canaries import canary_grid
    from finemem.report.tables import print_grid
    from finemem.run import RunFolder

    cans = read_canaries(run_dir)
    n_twins = sum(not c.inserted for c in cans)
    if not RunFolder(run_dir).has_results():
        raise UserError("no results store; run `finemem audit` first", source=str(run_dir))
    run = RunData.open(run_dir)
    try:
        grid = canary_grid(run, attack, n_twins=n_twins)
    finally:
        run.close()
    if grid is None:
        raise UserError("no canary results; run `finemem audit RUN_DIR --probes canaries`",
                        source=str(run_dir))
    print_grid(grid, Console())
    from finemem.analysis.privacy import audit_rows  # issue 21 hook: the privacy audit

    for r in audit_rows(run_dir):
        promised = "no DP" if r["promised"] is None else f"promised {r['promised']:.2f}"
        typer.echo(f"privacy audit {r['checkpoint']} tier {r['tier']}x: epsilon >= "
                   f"{r['bound']:.2f} at {100 * r['confidence']:.0f}% ({r['n']} canaries, "
                   f"{r['attack']}); {promised}")


def register(app: typer.Typer) -> None:
    app.add_typer(canaries_app, name="canaries")
