"""Runs side by side (paper 3: "how much less leaks with LoRA, and at what task cost?"), from
stored results only: each run at one checkpoint, memorization by each metric with intervals,
task performance, and the relative reduction against a reference (full fine-tuning) run.

Usage:
    sides = [load_side(p, at="final") for p in expand_runs(["runs/full", "runs/lora"])]
    cmp = compare(sides, threshold=0.8, margin=0.10)
    cmp.rows[1].reduction["relaxed"]        # (value, lo, hi): 1 - rate(lora) / rate(full)
    cmp.notes                               # shared examples, runs not at comparable performance

The table, CSV and plot are `finemem.report.compare`; `finemem compare` is
`finemem.cli.compare_cmd`.

Per-example outcomes come from the extraction probe's rows in each run's store (`embedding_cosine`,
`exact_greedy_extractable`, `category`), so any run audited with `--probes extraction` (or
`relaxed`) can be compared. Runs must share training examples: members are matched by id and
by their manifest row (the example's prompt and completion lengths); runs with none in common
are refused, and when only some are shared the comparison uses those and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finemem.errors import UserError
from finemem.metrics.extraction import bootstrap_diff_ci
from finemem.metrics.relaxed import DEFAULT_THRESHOLDS, paired_reduction_ci, relaxed_flags
from finemem.metrics.stats import Rate
from finemem.run import RunFolder

SETS = ("members", "nonmembers")
# memorization outcome -> how it is read from one example's stored values
OUTCOMES = ("relaxed", "exact", "verbatim")
OUTCOME_TITLES = {"relaxed": "relaxed (cos >= {t:g})", "exact": "exact suffix",
                  "verbatim": "verbatim category"}


@dataclass
class Side:
    """One run at one checkpoint, with its per-example extraction outcomes."""
    label: str
    run_dir: Path
    checkpoint: str
    step: int
    epoch: float
    settings: dict                       # method, model, LoRA rank/alpha, duplication, lr
    per: dict                            # set -> id -> {"cos", "exact", "verbatim"}
    manifest: dict                       # member id -> (prompt_chars, completion_chars)
    test_ppl: dict | None = None         # stored {value, lo, hi, n}
    test_acc: dict | None = None


@dataclass
class Row:
    side: Side
    rates: dict = field(default_factory=dict)      # (outcome, set) -> (value, lo, hi)
    excess: dict = field(default_factory=dict)     # outcome -> (value, lo, hi)
    reduction: dict = field(default_factory=dict)  # outcome -> (value, lo, hi) vs reference
    curve: dict = field(default_factory=dict)      # set -> [(t, value, lo, hi)]
    comparable: bool | None = None                 # None for the reference itself
    perf_note: str = ""


@dataclass
class Comparison:
    rows: list[Row]
    reference: str
    threshold: float
    thresholds: list[float]
    margin: float
    members: int                 # shared members compared
    nonmembers: int
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ finding runs

def _is_run(p: Path) -> bool:
    return RunFolder(p).is_run()


def expand_runs(paths) -> list[Path]:
    """Run folders, in order; a sweep folder (sweep.json, or sub-folders that are runs)
    stands for its cells."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise UserError("no such folder", source=str(p))
        if _is_run(p):
            out.append(p)
            continue
        cells = []
        if (p / "sweep.json").is_file():
            cells = [p / c["name"] for c in json.loads((p / "sweep.json").read_text())]
        cells = [c for c in cells if _is_run(c)] or sorted(c for c in p.iterdir() if _is_run(c))
        if not cells:
            raise UserError("not a run folder (a config and a results store) nor a sweep "
                            "folder holding any; train and audit it first", source=str(p))
        out += cells
    seen = set()
    uniq = [p for p in out if not (p.resolve() in seen or seen.add(p.resolve()))]
    if len(uniq) < 2:
        raise UserError("compare needs at least two runs (or a sweep folder with two cells)",
                        field="RUN_DIR")
    return uniq


def run_labels(paths: list[Path]) -> list[str]:
    """Each run's label: its folder name, with the parent's when two runs share a name."""
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


# ------------------------------------------------------------------ one run at a checkpoint

def pick_checkpoint(run_dir: Path, at: str) -> str:
    """The checkpoint name `at` stands for: final, recommended, best (best test accuracy, or
    lowest test PPL without answers) or step-N."""
    run = RunFolder(run_dir)
    with run.open_store() as store:
        names = [c.name for c in run.checkpoints(store, merges=False)]
    if at == "final":
        return names[-1]
    if at in ("recommended", "best"):
        from finemem.analysis.summary import ACC, PPL, summarize

        try:
            s = summarize(run_dir)
        except UserError as e:
            raise UserError(f"--at {at} needs the test PPL of every checkpoint ({e}); run "
                            "`finemem audit RUN_DIR --probes likelihood,relaxed`",
                            source=str(run_dir)) from None
        if at == "recommended":
            return s.recommendation.name
        col = s.column(ACC) if s.graded else [-x for x in s.column(PPL)]
        return s.rows[max(range(len(col)), key=lambda i: col[i])].name
    if at.startswith("step-") and at[5:].isdigit():
        want = f"step-{int(at[5:]):06d}"
        if want in names:
            return want
        raise UserError(f"no checkpoint {at}; checkpoints: {', '.join(names)}",
                        source=str(run_dir), field="--at")
    raise UserError(f"--at {at!r}: use recommended, best, final or step-N", field="--at")


def _settings(cfg) -> dict:
    t, d = cfg.training, cfg.data.duplication
    return {"method": t.method, "model": cfg.model, "lr": t.lr,
            "lora_r": t.lora.r if t.method == "lora" else None,
            "lora_alpha": t.lora.alpha if t.method == "lora" else None,
            "duplication": d.times if d.fraction > 0 else 1}


def load_side(run_dir, at: str = "final", label: str | None = None) -> Side:
    run = RunFolder(run_dir)
    run_dir = run.path
    cfg = run.config
    name = pick_checkpoint(run_dir, at)
    per: dict = {}
    with run.open_store() as store:
        ref = next(c for c in run.checkpoints(store) if c.name == name)
        for s in SETS:
            got = {k: store.get_values(ref.content_hash, s, k)
                   for k in ("embedding_cosine", "exact_greedy_extractable", "category")}
            ids = set(got["embedding_cosine"]) & set(got["exact_greedy_extractable"]) & \
                set(got["category"])
            per[s] = {i: {"cos": float(got["embedding_cosine"][i]),
                          "exact": float(got["exact_greedy_extractable"][i]),
                          "verbatim": float(got["category"][i] == "verbatim")}
                      for i in ids}
        metrics = {(m.split, m.name): m for m in store.metrics(checkpoint=name)
                   if not m.setting}
    if not per["members"] or not per["nonmembers"]:
        raise UserError(f"no extraction results at {name}; run `finemem audit {run_dir} "
                        "--probes relaxed` (add likelihood for task performance)",
                        source=str(run_dir))
    manifest = {}
    if (run_dir / "manifest.jsonl").is_file():
        for line in (run_dir / "manifest.jsonl").read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                manifest[str(row["id"])] = (row["prompt_chars"], row["completion_chars"])
    return Side(label or run_dir.name, run_dir, name, ref.step, ref.epoch, _settings(cfg), per,
                manifest, metrics.get(("test", "perplexity")),
                metrics.get(("test", "answer_accuracy")))


# ------------------------------------------------------------------ the comparison

def shared_ids(sides: list[Side]) -> tuple[list[str], list[str], list[str]]:
    """(members, non-members, notes): the ids every side probed, members also agreeing in
    their manifest rows (the same training example); UserError when no member is shared."""
    notes = []
    mem = set.intersection(*(set(s.per["members"]) for s in sides))
    if all(s.manifest for s in sides):
        mem = {i for i in mem if len({s.manifest.get(i) for s in sides}) == 1}
    if not mem:
        raise UserError("the runs share no probed training example (" + ", ".join(
            f"{s.label}: {len(s.per['members'])}" for s in sides) + " members): they were "
            "trained on different data; compare runs fine-tuned on the same examples",
            field="RUN_DIR")
    non = set.intersection(*(set(s.per["nonmembers"]) for s in sides))
    if not non:
        raise UserError("the runs share no probed non-member; give them the same "
                        "audit.nonmembers (or test set)", field="RUN_DIR")
    for what, ids in (("members", mem), ("nonmembers", non)):
        sizes = [len(s.per[what]) for s in sides]
        if any(n != len(ids) for n in sizes):
            notes.append(f"compared on the {len(ids)} {what.replace('nonm', 'non-m')} shared "
                         f"by all runs (probed: " + ", ".join(
                             f"{s.label} {n}" for s, n in zip(sides, sizes)) + ")")
    return sorted(mem), sorted(non), notes


def outcome_flags(side: Side, s: str, ids: list[str], outcome: str, threshold: float) -> np.ndarray:
    if outcome == "relaxed":
        return relaxed_flags([side.per[s][i]["cos"] for i in ids],
                             threshold=threshold).astype(float)
    return np.array([side.per[s][i][outcome] for i in ids], dtype=float)


def wilson(flags: np.ndarray) -> tuple[float, float, float]:
    r = Rate.from_counts(int(flags.sum()), int(flags.size))
    return r.value, r.lo, r.hi


def pick_reference(sides: list[Side], reference: str | None) -> int:
    if reference is not None:
        for i, s in enumerate(sides):
            if reference in (s.label, s.run_dir.name, str(s.run_dir)):
                return i
        raise UserError(f"--reference {reference!r} is none of the runs: "
                        + ", ".join(s.label for s in sides), field="--reference")
    return next((i for i, s in enumerate(sides) if s.settings["method"] == "full"), 0)


def performance_gap(ref: Side, other: Side, margin: float) -> tuple[bool, str]:
    """(comparable, why): test PPL within `margin` (relative) of the reference's, and test
    accuracy within `margin` (absolute) where both runs have it."""
    why, ok = [], True
    if ref.test_ppl and other.test_ppl:
        rel = other.test_ppl["value"] / ref.test_ppl["value"] - 1
        if abs(rel) > margin:
            ok = False
            why.append(f"test PPL {rel:+.0%} vs the reference")
    else:
        ok = False
        why.append("no test PPL stored (audit with the likelihood probe)")
    if ref.test_acc and other.test_acc:
        d = other.test_acc["value"] - ref.test_acc["value"]
        if abs(d) > margin:
            ok = False
            why.append(f"test accuracy {d:+.2f} vs the reference")
    return ok, "; ".join(why)


def compare(sides: list[Side], *, threshold: float = 0.8, thresholds=DEFAULT_THRESHOLDS,
            margin: float = 0.10, reference: str | None = None, n_boot: int = 1000
            ) -> Comparison:
    """Every side's rates (Wilson), excess over non-members (bootstrap), threshold curve, and
    relative reduction against the reference (paired bootstrap over the shared members)."""
    from finemem.metrics.relaxed import check_threshold

    try:
        threshold = check_threshold(threshold)
        thresholds = sorted({check_threshold(t) for t in thresholds} | {threshold})
    except ValueError as e:
        raise UserError(str(e), field="--threshold") from None
    if margin < 0:
        raise UserError(f"--margin is a non-negative fraction; got {margin}", field="--margin")
    mem, non, notes = shared_ids(sides)
    ids = {"members": mem, "nonmembers": non}
    ri = pick_reference(sides, reference)
    ref = sides[ri]
    rows = []
    for i, side in enumerate(sides):
        row = Row(side)
        for o in OUTCOMES:
            f = {s: outcome_flags(side, s, ids[s], o, threshold) for s in SETS}
            for s in SETS:
                row.rates[(o, s)] = wilson(f[s])
            d = f["members"].mean() - f["nonmembers"].mean()
            row.excess[o] = (float(d), *bootstrap_diff_ci(f["members"], f["nonmembers"],
                                                          n_boot=n_boot))
            if i != ri:
                row.reduction[o] = paired_reduction_ci(
                    outcome_flags(ref, "members", mem, o, threshold), f["members"], n_boot=n_boot)
        for s in SETS:
            row.curve[s] = [(t, *wilson(outcome_flags(side, s, ids[s], "relaxed", t)))
                            for t in thresholds]
        if i != ri:
            row.comparable, row.perf_note = performance_gap(ref, side, margin)
            if not row.comparable:
                notes.append(f"{side.label} is not at comparable task performance to "
                             f"{ref.label} ({row.perf_note}; margin {margin:g}): its "
                             "difference in memorization comes with a different fit, so it "
                             "is not a like-for-like reduction")
        rows.append(row)
    return Comparison(rows, ref.label, threshold, list(thresholds), margin, len(mem), len(non),
                      notes)
