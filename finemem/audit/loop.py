"""`finemem audit RUN_DIR [--probes a,b]`: the one loop over a run's checkpoints.

    audit_run(run_dir, probes=["overmem"])

The base (step 0), every checkpoint and every merge (RUN_DIR/merges/) is loaded once, in
order, and each requested probe runs on it (`finemem.audit.probes`). Every model call goes
through the engine, cached per example in the results store; a probe's done-key marks a
checkpoint it has finished, so a rerun computes only what is missing.
"""

from __future__ import annotations

import gc
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, TimeElapsedColumn

from finemem import distributed as ddp
from finemem import engine, faults
from finemem.audit import selfref
from finemem.audit.context import AuditContext
from finemem.audit.probes import get_probe, load_probes, resolve_probes
from finemem.config import AuditConfig, RunConfig
from finemem.errors import UserError
from finemem.models.load import load_tokenizer, pick_device, quiet_hf
from finemem.run import RunFolder


STAGE_PROBES = ("likelihood", "overmem")  # what the stage table and `recommend` read


def open_run(run_dir: str | Path) -> RunConfig:
    """The run's config (`RunFolder.config`), parsed with every probe's settings known."""
    load_probes()
    return RunFolder(run_dir).config


def audit_run(run_dir: str | Path, *, probes: list[str] | None = None,
              audit_cfg: AuditConfig | None = None, device: str | None = None,
              progress: bool = True, console: Console | None = None,
              workers: int | None = None, checkpoints: str | None = None,
              base: bool = True) -> list[str]:
    """Run `probes` (default: the config's `audit.probes`, else the default ones) on every
    checkpoint of the run that has not been audited with the same settings. `workers` > 1
    (default: the config's `audit.workers`) splits the checkpoints over that many processes.
    `checkpoints` picks some (`finemem.audit.select`: names, last, best, recommended,
    every:N, steps:A-B; best / recommended first run the stage table's probes, likelihood
    and overmem, where they are missing); the base (step 0) stays unless `base=False`.
    Returns the probes run."""
    from finemem.audit.select import needs_summary, parse_selection, pick_checkpoints

    run_dir = Path(run_dir)
    cfg = open_run(run_dir)
    device = device or cfg.device
    if checkpoints is not None:
        parse_selection(checkpoints)  # a malformed selection is refused before any work
    acfg = audit_cfg or cfg.audit
    cfg = cfg.model_copy(update={"audit": acfg})  # probes read their settings from ctx.cfg
    names = resolve_probes(probes if probes is not None else acfg.probes)
    workers = acfg.workers if workers is None else workers
    if workers < 1:
        raise UserError("workers must be >= 1", field="--workers")
    pick_device(device)  # an unknown device is refused before anything is written
    if ddp.active():  # `accelerate launch`: each rank takes a share of every call's examples
        ddp.check_audit_launch()
        device, workers, progress = ddp.device(device), 1, progress and ddp.is_main()
    summary = None
    if needs_summary(checkpoints):  # the first, cheap pass: the stage table's probes
        from finemem.audit.summary import summarize

        audit_run(run_dir, probes=list(STAGE_PROBES), audit_cfg=acfg, device=device,
                  progress=progress, console=console, workers=workers)
        summary = summarize(run_dir, audit_cfg=acfg)
    ctx, active, keys = _open(run_dir, cfg, acfg, names)
    try:
        for w in ctx.overlap_warnings() if ddp.is_main() else ():
            (console or Console(stderr=True)).print(f"[yellow]warning:[/] {w}")
        for p in active if ddp.is_main() else ():
            if p.note:
                (console or Console()).print(p.note, highlight=False)
        every = engine.load_run_checkpoints(run_dir, store=ctx.store)
        picked = pick_checkpoints(checkpoints, every,
                                  engine.list_merges(run_dir), base=base, summary=summary)
        refs = [r for r in picked if _todo(ctx, active, keys, r)]
        _check_refs(cfg, refs)
        if ddp.is_main():  # checked: the base's hash is stored for readers without the model
            RunFolder(run_dir).record_base_hash(ctx.store, every[0].base_model)
        ddp.barrier()  # launched: every rank has its list before the main one marks any done
        if len(refs) > 1 and workers > 1:
            _parallel(ctx, active, keys, refs, names, acfg, device, workers, progress)
        elif refs:
            _loop(ctx, refs, active, keys, cfg, device, progress)
        if ddp.is_main():
            ctx.store.add_audit(probes=names, selection=checkpoints or "all",
                                checkpoints=[r.name for r in picked],
                                settings={p.name: p.describe() for p in active if p.describe()})
    finally:
        ctx.store.close()
    return names


def _open(run_dir: Path, cfg: RunConfig, acfg: AuditConfig, names: list[str]):
    """The audit's context and its prepared probes with their done-keys."""
    run = RunFolder(run_dir)
    store = run.open_store()
    try:
        ctx = AuditContext(run_dir, cfg, load_tokenizer(str(run.tokenizer_dir)), store)
        active = [get_probe(n)(acfg.section(n)) for n in names]
        for p in active:
            p.prepare(ctx)
    except BaseException:
        store.close()
        raise
    return ctx, active, {p.name: p.done_key() for p in active}


def _check_refs(cfg: RunConfig, refs) -> None:
    """Before anything is written: every checkpoint to audit has readable weight files and was
    trained on this run's base model (an adapter copied in from another run is refused)."""
    from finemem.models.load import resolve_model
    from finemem.run.checkpoints import base_content_hash, check_weights

    want = None
    for r in refs:
        if r.path is None:
            continue
        check_weights(r.path)
        if Path(r.base_model).exists():
            want = want or base_content_hash(resolve_model(cfg.model))
            if base_content_hash(r.base_model) != want:
                raise UserError(f"this checkpoint was trained on another base model "
                                f"({r.base_model}), not this run's ({cfg.model}); move it out "
                                "of the run folder", source=str(r.path))


def _todo(ctx: AuditContext, active: list, keys: dict, ref) -> list:
    """The probes not yet done on `ref` with these settings."""
    return [p for p in active
            if not ctx.store.has_metric(ref.name, "*", f"done:{p.name}", keys[p.name])]


def _parallel(ctx, active, keys, refs, names, acfg, device, workers, progress) -> None:
    """Every `workers`-th checkpoint to each of `workers` processes, each with its share of
    the torch threads: a small model on a CPU does not use two threads well (generation of the
    demo's 900 test prompts: 5.8 s on 1 thread, 4.1-5.0 s on 2). The store (SQLite, WAL) takes
    their writes; per-example seeds keep samples independent of the split, so results equal one
    process's up to float summation order (the thread count can flip a near-tie sample token)."""
    import multiprocessing as mp
    import time
    from concurrent.futures import ProcessPoolExecutor

    import torch

    threads = max(1, torch.get_num_threads() // workers)
    raw = acfg.model_dump(mode="json")
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool, \
            Progress(*Progress.get_default_columns(), TimeElapsedColumn(),
                     disable=not progress) as bar:
        # the trainer the spv attack needs, handed in by finemem.train, crosses to the workers
        # by reference (pickled by name)
        trainer = selfref.registered_trainer()
        futures = [pool.submit(_worker, str(ctx.run_dir), refs[i::workers], names, raw, device,
                               threads, trainer) for i in range(workers) if refs[i::workers]]
        task = bar.add_task(f"audit ({len(futures)} processes)", total=len(refs))
        plain, shown = progress and not bar.console.is_terminal, 0  # pipes: a line per checkpoint
        while not all(f.done() for f in futures):
            time.sleep(0.5)
            done = sum(not _todo(ctx, active, keys, r) for r in refs)
            bar.update(task, completed=done)
            if plain and done != shown:
                shown = done
                bar.console.print(f"audit: {done}/{len(refs)} checkpoints done "
                                  f"({bar.tasks[task].elapsed:.0f} s)", highlight=False)
        for f in futures:
            f.result()  # a worker's error, raised here


def _worker(run_dir: str, refs: list, names: list[str], acfg_raw: dict, device: str,
            threads: int, trainer=None) -> None:
    import torch

    torch.set_num_threads(threads)
    if trainer is not None:
        selfref.register_trainer(trainer)
    cfg = open_run(run_dir)  # first: it registers the probes' settings in this process
    acfg = AuditConfig.model_validate(acfg_raw)
    cfg = cfg.model_copy(update={"audit": acfg})
    ctx, active, keys = _open(Path(run_dir), cfg, acfg, names)
    try:
        _loop(ctx, refs, active, keys, cfg, device, progress=False)
    finally:
        ctx.store.close()


def _loop(ctx: AuditContext, refs, active: list, keys: dict, cfg: RunConfig, device: str,
          progress: bool) -> None:
    # What exists now (the libraries, the prepared data) lives through the loop: frozen, it is
    # left out of every garbage collection, the engine's after each full checkpoint included
    # (0.2 s each on the demo's data, and Python's own collections as the results pile up).
    gc.freeze()
    try:
        _checkpoints(ctx, refs, active, keys, cfg, device, progress)
    finally:
        gc.unfreeze()


def _checkpoints(ctx: AuditContext, refs, active: list, keys: dict, cfg: RunConfig,
                 device: str, progress: bool) -> None:
    with quiet_hf(), Progress(*Progress.get_default_columns(), TimeElapsedColumn(),
                              disable=not progress) as bar:
        task = bar.add_task("audit", total=len(refs))
        plain = progress and not bar.console.is_terminal  # CI logs, `| tee`: one line per step
        for ref, model in engine.iter_models(ctx.run_dir, refs=refs, device=device,
                                             dtype=cfg.dtype):
            todo = _todo(ctx, active, keys, ref)
            ddp.barrier()  # launched: as above, per checkpoint
            if todo:  # the probes' scores in shared passes (where it pays: ctx.prefetch)
                ctx.phase = _phase(bar, task, f"audit {ref.name}", plain)
                ctx.prefetch(ref, model, [r for p in todo for r in p.requests(ctx, ref)])
            for probe in todo:
                ctx.phase = _phase(bar, task, f"audit {ref.name} {probe.name}", plain)
                probe.run(ctx, ref, model)
                faults.point("probe_done")
                if ddp.is_main():  # launched: only the main process writes metrics
                    ctx.store.put_metric(ref.name, "*", f"done:{probe.name}", 1.0,
                                         setting=keys[probe.name])
            bar.advance(task)
            if plain:
                t = bar.tasks[task]
                eta = t.elapsed / t.completed * (t.total - t.completed)
                bar.console.print(f"audit {ref.name} done ({t.completed:.0f}/{t.total:.0f}, "
                                  f"{t.elapsed:.0f} s, about {eta:.0f} s left)", highlight=False)


def _phase(bar, task, what: str, plain: bool):
    """The progress callback of one probe on one checkpoint: the bar's description, and a
    printed line when the output is not a terminal (where the bar does not show)."""
    def phase(step: str) -> None:
        bar.update(task, description=f"{what}: {step}")
        if plain:
            bar.console.print(f"{what}: {step}", highlight=False)
    return phase
