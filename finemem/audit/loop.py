"""`finemem audit RUN_DIR [--probes a,b]`: the one loop over a run's checkpoints.

    audit_run(run_dir, probes=["overmem"])

The base (step 0), every checkpoint and every merge (RUN_DIR/merges/) is loaded once, in
order, and each requested probe runs on it (`finemem.audit.probes`). Every model call goes
through the engine, cached per example in the results store; a probe's done-key marks a
checkpoint it has finished, so a rerun computes only what is missing.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import Progress, TimeElapsedColumn

from finemem import engine
from finemem.audit.context import AuditContext
from finemem.audit.probes import get_probe, resolve_probes
from finemem.config import AuditConfig, RunConfig, load_config
from finemem.errors import UserError
from finemem.models.load import load_tokenizer
from finemem.store import Store
from finemem.train.loop import quiet_hf


def open_run(run_dir: str | Path) -> RunConfig:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError("not a finemem run folder (no config.yaml); train it first with "
                        "`finemem train`", source=str(run_dir))
    return load_config(run_dir / "config.yaml")


def audit_run(run_dir: str | Path, *, probes: list[str] | None = None,
              audit_cfg: AuditConfig | None = None, device: str = "auto",
              progress: bool = True, console: Console | None = None) -> list[str]:
    """Run `probes` (default: the config's `audit.probes`, else the default ones) on every
    checkpoint of the run that has not been audited with the same settings. Returns the
    probes run."""
    run_dir = Path(run_dir)
    cfg = open_run(run_dir)
    acfg = audit_cfg or cfg.audit
    names = resolve_probes(probes if probes is not None else acfg.probes)
    store = Store(run_dir / "results.sqlite")
    try:
        tok = load_tokenizer(str(run_dir / "tokenizer"))
        ctx = AuditContext(run_dir, cfg, tok, store)
        active = [get_probe(n)(acfg.section(n)) for n in names]
        for p in active:
            p.prepare(ctx)
        for w in ctx.overlap_warnings():
            (console or Console(stderr=True)).print(f"[yellow]warning:[/] {w}")
        keys = {p.name: p.done_key() for p in active}

        def todo(ref) -> list:
            return [p for p in active
                    if not store.has_metric(ref.name, "*", f"done:{p.name}", keys[p.name])]

        refs = [r for r in engine.load_run_checkpoints(run_dir) + engine.list_merges(run_dir)
                if todo(r)]
        if refs:
            _loop(ctx, refs, todo, keys, cfg, device, progress)
    finally:
        store.close()
    return names


def _loop(ctx: AuditContext, refs, todo, keys: dict, cfg: RunConfig, device: str,
          progress: bool) -> None:
    with quiet_hf(), Progress(*Progress.get_default_columns(), TimeElapsedColumn(),
                              disable=not progress) as bar:
        task = bar.add_task("audit", total=len(refs))
        for ref, model in engine.iter_models(ctx.run_dir, refs=refs, device=device,
                                             dtype=cfg.dtype):
            for probe in todo(ref):
                ctx.phase = (lambda what, ref=ref, p=probe.name:
                             bar.update(task, description=f"audit {ref.name} {p}: {what}"))
                probe.run(ctx, ref, model)
                ctx.store.put_metric(ref.name, "*", f"done:{probe.name}", 1.0,
                                     setting=keys[probe.name])
            bar.advance(task)
