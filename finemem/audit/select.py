"""Which checkpoints `finemem audit --checkpoints ...` covers.

    finemem audit RUN --checkpoints recommended,last --probes extraction
    pick_checkpoints("every:5,steps:100-400", refs)          # -> the refs to audit

A selection is comma-separated; each item is a checkpoint name (`step-000384`, a merge's
name), `last` (the last training checkpoint), `best` (the most accurate one; without graded
answers, the lowest test PPL), `recommended` (the checkpoint `finemem recommend` names),
`every:N` (every N-th training checkpoint: the N-th, 2N-th, ...) or `steps:A-B` (training
checkpoints with A <= step <= B). The base (step 0) is kept unless `base=False`: probes
such as membership's reference attack read it. `best` and `recommended` read the stage
table's results, so the audit first runs its probes on the checkpoints that lack them
(`NEEDS_SUMMARY`).
"""

from __future__ import annotations

import difflib
import re

from finemem.errors import UserError

NEEDS_SUMMARY = ("best", "recommended")
WORDS = ("last", "best", "recommended", "every:N", "steps:A-B")
FIELD = "--checkpoints"


def parse_selection(spec: str) -> list[str]:
    """The items of a selection, checked for form (names are checked against the run)."""
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise UserError(f"empty selection; give names or {', '.join(WORDS)}", field=FIELD)
    for item in items:
        if item.startswith("every:") and not re.fullmatch(r"every:[1-9]\d*", item):
            raise UserError(f"'{item}': every:N takes a whole number N >= 1, e.g. every:5",
                            field=FIELD)
        if item.startswith("steps:") and not re.fullmatch(r"steps:\d+-\d+", item):
            raise UserError(f"'{item}': steps:A-B takes two steps, e.g. steps:0-400",
                            field=FIELD)
    return items


def needs_summary(spec: str | None) -> bool:
    return spec is not None and any(i in NEEDS_SUMMARY for i in parse_selection(spec))


def pick_checkpoints(spec: str | None, run_refs: list, merges: list = (), *,
                     base: bool = True, summary=None) -> list:
    """The refs that `spec` selects, in the run's order: `run_refs` is the base (step 0) and
    the training checkpoints (`engine.load_run_checkpoints`), `merges` the run's merges.
    None selects all. `summary` (`finemem.audit.summarize`) answers best / recommended."""
    refs = list(run_refs) + list(merges)
    train = [i for i, r in enumerate(run_refs) if r.kind != "base"]
    chosen = set(range(len(refs)))
    if spec is not None:
        chosen = set()
        for item in parse_selection(spec):
            chosen |= _pick(item, refs, train, summary)
    at_base = {i for i, r in enumerate(run_refs) if r.kind == "base"}
    chosen = chosen | at_base if base else chosen - at_base
    return [refs[i] for i in sorted(chosen)]


def _pick(item: str, refs: list, train: list[int], summary) -> set[int]:
    names = {r.name: i for i, r in enumerate(refs)}
    if item == "last":
        return {train[-1]} if train else set()
    if item in NEEDS_SUMMARY:
        name = _best(summary) if item == "best" else summary.recommendation.name
        if name not in names:
            raise UserError(f"'{item}' is {name}, which is not among this run's checkpoints",
                            field=FIELD)
        return {names[name]}
    if item.startswith("every:"):
        n = int(item.split(":")[1])
        return {i for k, i in enumerate(train, 1) if k % n == 0}
    if item.startswith("steps:"):
        a, b = (int(x) for x in item.split(":")[1].split("-"))
        got = {i for i in train if a <= refs[i].step <= b}
        if not got:
            steps = [refs[i].step for i in train]
            span = f"{steps[0]}-{steps[-1]}" if steps else "none"
            raise UserError(f"'{item}' selects no checkpoint; this run's steps are {span} "
                            f"(e.g. steps:{span})", field=FIELD)
        return got
    if item in names:
        return {names[item]}
    close = difflib.get_close_matches(item, list(names), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise UserError(f"no checkpoint '{item}' in this run; {hint}give a name "
                    f"({', '.join(list(names)[:2])}, ...) or {', '.join(WORDS)}", field=FIELD)


def _best(summary) -> str:
    """The most accurate trajectory checkpoint (ties: the earliest); ungraded: the lowest
    test PPL."""
    from finemem.audit.summary import ACC, PPL

    rows = [r for r in summary.rows if r.step > 0] or summary.rows
    if summary.graded:
        return max(rows, key=lambda r: (r.get(ACC), -r.step)).name
    return min(rows, key=lambda r: (r.get(PPL), r.step)).name
