"""Audits: run probes on every checkpoint of a run, store their metrics, read them back.

    finemem audit RUN_DIR [--probes a,b]   -> audit_run(run_dir, probes=[...])
    finemem recommend RUN_DIR              -> summarize(run_dir).recommendation

Layers: `probes/` (what is measured, one module each), `loop` (the one checkpoint loop),
`context` (what a probe sees: data, engine, store), `evalsets` (the eval sets a task declares),
`measures` (engine outputs -> registered metrics with intervals), `summary` (stored metrics ->
stages and recommendation, never a model).
"""

from __future__ import annotations


def __getattr__(name: str):
    # Lazy, so that reading configs (which validates probe sections) does not import torch.
    if name == "audit_run":
        from finemem.audit.loop import audit_run

        return audit_run
    if name in ("summarize", "RunSummary"):
        from finemem.analysis import summary

        return getattr(summary, name)
    raise AttributeError(name)


__all__ = ["audit_run", "summarize", "RunSummary"]
