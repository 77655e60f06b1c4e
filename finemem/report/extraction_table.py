"""The extraction table printed after `finemem audit --probes extraction`: one row per
checkpoint, members against the non-member floor, with intervals and sample sizes."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from finemem.analysis.extraction import excess, extraction_rows
from finemem.metrics.stats import MIN_N_FOR_CLAIM


def _ci(m: dict | None, digits: int = 2) -> str:
    if m is None:
        return "-"
    return f"{m['value']:.{digits}f} [{m['lo']:.{digits}f},{m['hi']:.{digits}f}]"


def audited_cut(run_dir) -> dict | None:
    """The prefix / suffix lengths (P, S) of the latest audit that ran the extraction probe,
    as recorded in the store; None for stores from before audits were recorded."""
    from finemem.run import RunFolder

    folder = RunFolder(run_dir)
    if not folder.has_results():
        return None
    with folder.open_store() as store:
        found = [a["settings"]["extraction"] for a in store.audits()
                 if "extraction" in a["settings"]]
    return found[-1] if found else None


def extraction_table(run_dir, rows=None) -> Table | None:
    rows = extraction_rows(run_dir) if rows is None else rows
    if not rows:
        return None
    n_mem = (rows[0].get("members", "exact_greedy_extractable") or {}).get("n")
    n_non = (rows[0].get("nonmembers", "exact_greedy_extractable") or {}).get("n")
    cut = audited_cut(run_dir)
    what = (f"prefix P = {cut['prefix_tokens']}, suffix S = {cut['suffix_tokens']} tokens; "
            if cut else "")
    exact = f"exact {cut['suffix_tokens']}-token suffix" if cut else "exact S-token suffix"
    t = Table(title=f"Extraction of {run_dir} ({what}members n={n_mem}, non-members "
                    f"n={n_non}; 95% intervals)")
    for col in ("checkpoint", "epoch", f"{exact} (members)", "verbatim (members)",
                "verbatim (non-members)", "excess verbatim", "any category (members)",
                "excess any", "ROUGE-L mem / non"):
        t.add_column(col, justify="left" if col == "checkpoint" else "right")
    for r in rows:
        rl_m, rl_n = r.get("members", "rouge_l"), r.get("nonmembers", "rouge_l")
        t.add_row(r.name, f"{r.epoch:.1f}", _ci(r.get("members", "exact_greedy_extractable")),
                  _ci(r.get("members", "memorization_ratio", category="verbatim")),
                  _ci(r.get("nonmembers", "memorization_ratio", category="verbatim")),
                  _ci(excess(r, "verbatim")),
                  _ci(r.get("members", "memorization_ratio", category="any")),
                  _ci(excess(r, "any")),
                  f"{rl_m['value']:.2f} / {rl_n['value']:.2f}" if rl_m and rl_n else "-")
    return t


def print_extraction(run_dir, console: Console | None = None, *, store=None) -> bool:
    """Print the table and the controls; False when the run has no extraction results."""
    console = console or Console()
    rows = extraction_rows(run_dir, store=store)
    t = extraction_table(run_dir, rows)
    if t is None:
        return False
    if not console.is_terminal:
        console.width = max(console.width, 180)
    console.print(t)
    last = rows[-1]
    p, z = last.get("control_perfect", "rouge_l"), last.get("control_null", "rouge_l")
    pv = last.get("control_perfect", "memorization_ratio", category="verbatim")
    zv = last.get("control_null", "memorization_ratio", category="verbatim")
    if p and z and pv and zv:
        console.print(f"Controls: the true suffix scores ROUGE-L {p['value']:.2f} (verbatim "
                      f"{pv['value']:.2f}); another member's suffix {z['value']:.2f} "
                      f"(verbatim {zv['value']:.2f}).")
    n = (last.get("members", "exact_greedy_extractable") or {}).get("n") or 0
    if n < MIN_N_FOR_CLAIM:
        console.print(f"[yellow]Only {n} members qualified: too few for a claim about rates "
                      f"(need {MIN_N_FOR_CLAIM}); raise audit.extraction.members or lower "
                      "prefix_tokens / suffix_tokens.[/]")
    return True
