"""Accuracy against leakage per checkpoint, and the most accurate checkpoint within a leakage
budget. Functions of stored numbers (an audited run's summary); no model.

Usage:
    budget = parse_budget("auc=0.6")                     # Budget("auc", 0.6)
    rows = leakage_rows(summarize(run_dir), attack="loss")
    pick = pick_within(rows, budget, graded=True)        # Pick(row or None, explanation)

Leakage measures (the `membership` probe's stored results, split "membership"):
  * ``auc``: ROC AUC of the attack (0.5 = no leakage);
  * ``tpr``: its TPR at 1% FPR (refused, so absent, with fewer than 100 non-members);
  * ``extraction``: share of members whose whole completion greedy decoding reproduces
    exactly (the extraction probe's "exact" counts an S-token suffix instead).
A checkpoint is within the budget when its point estimate is at most the limit; the interval
is shown beside it. Among those, the best test accuracy wins (lowest test PPL on free text),
then the lower leakage, then the earlier step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from finemem.errors import UserError

DEFAULT_BUDGET = "auc=0.6"  # the demo's budget: an attacker ranks a member above a non-member
                           # at most 60% of the time (0.5 = chance)
KINDS = {"auc": ("membership/membership_auc", {}),
         "tpr": ("membership/membership_tpr_at_fpr", {"fpr": 0.01}),
         "extraction": ("membership/exact_greedy_extractable", None)}
ACC, PPL = "test/answer_accuracy", "test/perplexity"


@dataclass(frozen=True)
class Budget:
    kind: str
    limit: float


@dataclass(frozen=True)
class Pick:
    row: dict | None
    explanation: str


def parse_budget(text: str) -> Budget:
    """'auc=0.6' | 'tpr=0.1' | 'extraction=0.05' -> Budget; else `UserError`."""
    kind, sep, value = text.partition("=")
    kind = kind.strip().lower()
    try:
        limit = float(value)
    except ValueError:
        limit = math.nan
    if not sep or kind not in KINDS or not 0 <= limit <= 1:
        raise UserError(f"--max-leakage expects auc=<0..1>, tpr=<0..1> or extraction=<0..1> "
                        f"(e.g. auc=0.6), got '{text}'", field="--max-leakage")
    return Budget(kind, limit)


def _stat(row, kind: str, attack: str) -> tuple[float, float | None, float | None]:
    key, extra = KINDS[kind]
    found = row.find(key) if extra is None else row.find(key, attack=attack, **extra)
    if not found:
        return math.nan, None, None
    return found["value"], found["lo"], found["hi"]


def leakage_rows(summary, *, attack: str = "loss") -> list[dict]:
    """One dict per audited checkpoint (trajectory, then merges) with accuracy (or test PPL)
    and each leakage measure with its interval (nan when not stored)."""
    out = []
    for r in summary.rows + summary.merges:
        d = {"name": r.name, "step": r.step, "epoch": r.epoch, "acc": r.get(ACC),
             "acc_n": r.n(ACC), "ppl": r.get(PPL), "merged": r.merged}
        for kind in KINDS:
            v, lo, hi = _stat(r, kind, attack)
            d[kind], d[kind + "_lo"], d[kind + "_hi"] = v, lo, hi
        nm = r.find("membership/membership_auc", attack=attack)
        d["nonmembers"] = nm["settings"].get("nonmembers") if nm else None
        d["members"] = nm["n"] if nm else None
        out.append(d)
    return out


def has_leakage(rows: list[dict]) -> bool:
    return any(not math.isnan(r[k]) for r in rows for k in KINDS)


def pick_within(rows: list[dict], budget: Budget, *, graded: bool) -> Pick:
    """The most accurate checkpoint whose leakage is within `budget` (see module docstring)."""
    measured = [r for r in rows if not math.isnan(r[budget.kind])]
    if not measured:
        why = (" (TPR at 1% FPR needs >= 100 non-members)" if budget.kind == "tpr" else "")
        raise UserError(f"no checkpoint has a stored {budget.kind} figure{why}; run `finemem "
                        "audit RUN_DIR --probes membership` first", field="--max-leakage")
    ok = [r for r in measured if r[budget.kind] <= budget.limit + 1e-12]
    if not ok:
        low = min(measured, key=lambda r: r[budget.kind])
        return Pick(None, f"No checkpoint is within {budget.kind} <= {budget.limit:g}: the "
                          f"lowest is {low[budget.kind]:.3f} at {low['name']}. Train for fewer "
                          "steps, on more data, or accept more leakage.")
    if graded:
        best = min(ok, key=lambda r: (-r["acc"], r[budget.kind], r["step"]))
        quality = f"test accuracy {best['acc']:.3f}"
    else:
        best = min(ok, key=lambda r: (r["ppl"], r[budget.kind], r["step"]))
        quality = f"test PPL {best['ppl']:.3g}"
    lo, hi = best[budget.kind + "_lo"], best[budget.kind + "_hi"]
    ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
    return Pick(best, f"Within {budget.kind} <= {budget.limit:g}: {best['name']} (step "
                      f"{best['step']}), {quality}, {budget.kind} {best[budget.kind]:.3f}{ci}; "
                      f"{len(ok)} of {len(measured)} measured checkpoints are within the budget.")


def blind_shift_note(rows) -> str | None:
    """The distribution-shift warning (Das et al. 2024) when a row's stored blind baseline
    (`membership/blind_baseline_auc`) has its interval above 0.55: the membership figures the
    budget reads then measure the shift between members and non-members, not memorization."""
    from finemem.metrics.blind import SHIFT_NOTE, distribution_shift

    for row in rows:
        b = row.find("membership/blind_baseline_auc") if hasattr(row, "find") else None
        if b and distribution_shift(b.get("lo")):
            return (f"warning: {SHIFT_NOTE} (blind baseline AUC {b['value']:.2f} "
                    f"[{b['lo']:.2f}, {b['hi']:.2f}] from the text alone; "
                    "--max-leakage reads those figures)")
    return None
