"""Runs side by side (paper 3: "how much less leaks with LoRA, and at what task cost?"), from
stored results only: each run at one checkpoint, memorization by each metric with intervals,
task performance, and the relative reduction against a reference (full fine-tuning) run.

Usage:
    sides = [load_side(p, at="final") for p in expand_runs(["runs/full", "runs/lora"])]
    cmp = compare(sides, threshold=0.8, margin=0.10)
    cmp.rows[1].reduction["relaxed"]        # (value, lo, hi): 1 - rate(lora) / rate(full)
    cmp.notes                               # shared examples, runs not at comparable performance

Per-example outcomes come from the extraction probe's rows in each run's store (`embedding_cosine`,
`exact_greedy_extractable`, `category`), so any run audited with `--probes extraction` (or
`relaxed`) can be compared. Runs must share training examples: members are matched by id and
by their manifest row (the example's prompt and completion lengths); runs with none in common
are refused, and when only some are shared the comparison uses those and says so.
"""

from __future__ import annotations

import json
import math
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


def _labels(paths: list[Path]) -> list[str]:
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


# ------------------------------------------------------------------ outputs

def fmt(v: tuple | None, digits: int = 2, pct: bool = False) -> str:
    if v is None or v[0] is None or (isinstance(v[0], float) and math.isnan(v[0])):
        return "-"
    if pct:
        return f"{v[0]:+.0%} [{v[1]:+.0%}, {v[2]:+.0%}]"
    return f"{v[0]:.{digits}f} [{v[1]:.{digits}f}, {v[2]:.{digits}f}]"


def _perf(m: dict | None, digits: int = 3) -> str:
    if not m:
        return "-"
    if m.get("lo") is None:
        return f"{m['value']:.{digits}f}"
    return f"{m['value']:.{digits}f} [{m['lo']:.{digits}f}, {m['hi']:.{digits}f}]"


def table(cmp: Comparison):
    """A rich table: one line per run (the CSV has every number)."""
    from rich.table import Table

    t = Table(title=f"Memorization vs task performance (reference: {cmp.reference}; "
                    f"{cmp.members} members, {cmp.nonmembers} non-members; 95% intervals)")
    acc = any(r.side.test_acc for r in cmp.rows)
    cols = ["run", "checkpoint", "method", "test PPL"] + (["test acc"] if acc else []) + [
        f"relaxed >= {cmp.threshold:g}: members", "non-members", "excess", "exact", "verbatim",
        "reduction vs reference: relaxed", "verbatim", "comparable?"]
    for col in cols:
        t.add_column(col)
    for r in cmp.rows:
        s = r.side
        method = s.settings["method"] + (f" r{s.settings['lora_r']}" if s.settings["lora_r"]
                                          else "")
        if s.settings["duplication"] > 1:
            method += f" x{s.settings['duplication']}"
        comp = ("reference" if r.comparable is None else
                "yes" if r.comparable else f"NO: {r.perf_note}")
        ppl = f"{s.test_ppl['value']:.2f}" if s.test_ppl else "-"
        cells = [s.label, s.checkpoint, method, ppl]
        if acc:
            cells.append(_perf(s.test_acc, 2))
        cells += [fmt(r.rates[("relaxed", "members")]), fmt(r.rates[("relaxed", "nonmembers")]),
                  fmt(r.excess["relaxed"]), fmt(r.rates[("exact", "members")]),
                  fmt(r.rates[("verbatim", "members")]),
                  fmt(r.reduction.get("relaxed"), pct=True),
                  fmt(r.reduction.get("verbatim"), pct=True), comp]
        t.add_row(*cells)
    return t


def write_csv(cmp: Comparison, path: Path) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ["run", "run_dir", "checkpoint", "step", "epoch", "method", "model", "lr", "lora_r",
            "lora_alpha", "duplication", "test_ppl", "test_ppl_lo", "test_ppl_hi", "test_acc",
            "test_acc_lo", "test_acc_hi", "members_n", "nonmembers_n", "threshold"]
    for o in OUTCOMES:
        for what in ("members", "nonmembers", "excess", "reduction"):
            cols += [f"{o}_{what}", f"{o}_{what}_lo", f"{o}_{what}_hi"]
    cols += ["comparable", "performance_note"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in cmp.rows:
            s = r.side
            p, a = s.test_ppl or {}, s.test_acc or {}
            line = [s.label, str(s.run_dir), s.checkpoint, s.step, s.epoch,
                    *[s.settings[k] for k in ("method", "model", "lr", "lora_r", "lora_alpha",
                                              "duplication")],
                    p.get("value"), p.get("lo"), p.get("hi"), a.get("value"), a.get("lo"),
                    a.get("hi"), cmp.members, cmp.nonmembers, cmp.threshold]
            for o in OUTCOMES:
                line += [*r.rates[(o, "members")], *r.rates[(o, "nonmembers")], *r.excess[o],
                         *(r.reduction.get(o) or (None, None, None))]
            line += ["reference" if r.comparable is None else r.comparable, r.perf_note]
            w.writerow(["" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                        for v in line])
    curve = path.with_name(path.stem + "_curves.csv")
    with open(curve, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["run", "set", "threshold", "relaxed_memorization_rate", "lo", "hi"])
        for r in cmp.rows:
            for s in SETS:
                for t, v, lo, hi in r.curve[s]:
                    w.writerow([r.side.label, s, t, v, lo, hi])
    return path


def plot_curves(cmp: Comparison, path: Path) -> Path:
    """Threshold curves of every run on one figure: members solid (with the 95% band),
    non-members dashed; runs not at comparable task performance are marked in the legend and
    named under the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for k, r in enumerate(cmp.rows):
        color = f"C{k % 10}"
        mark = "" if r.comparable in (None, True) else " (not comparable)"
        t, v, lo, hi = np.array(r.curve["members"], dtype=float).T
        ax.plot(t, v, color=color, marker="o", ms=3, label=f"{r.side.label}{mark}")
        ax.fill_between(t, lo, hi, color=color, alpha=0.12)
        t, v, _, _ = np.array(r.curve["nonmembers"], dtype=float).T
        ax.plot(t, v, color=color, ls="--", lw=1)
    ax.axvline(cmp.threshold, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("cosine threshold (MiniLM, generation vs true suffix)")
    ax.set_ylabel("relaxed memorization rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Relaxed memorization: members (solid, 95% band) vs non-members (dashed)",
                 fontsize=10)
    ax.legend(fontsize=8)
    bad = [r.side.label for r in cmp.rows if r.comparable is False]
    if bad:
        fig.text(0.01, 0.01, f"Not at comparable task performance (margin {cmp.margin:g}): "
                 + ", ".join(bad), fontsize=8, color="firebrick")
    fig.tight_layout(rect=(0, 0.04 if bad else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_compare(paths, *, at: str = "final", out: Path | None = None, threshold: float | None
                = None, margin: float = 0.10, reference: str | None = None, console=None
                ) -> Comparison:
    """`finemem compare`: load, compare, print the table and notes, write CSV and plots."""
    from rich.console import Console

    from finemem.config import load_config

    console = console or Console()
    runs = expand_runs(paths)
    # issue 21 hook: mitigations (DP, dedup, ...) lined up by leakage and the privacy audit;
    # runs audited without the extraction probe get this table alone
    from finemem.analysis import tradeoff

    trade = [tradeoff.tradeoff_row(p, at, lab) for p, lab in zip(runs, _labels(runs))]
    if any(tradeoff.has_tradeoff(r) for r in trade):
        if not console.is_terminal:
            console.width = max(console.width, 200)
        tradeoff.print_tradeoff(trade, console)
        out_t = Path(out) if out else Path(runs[0]).parent / "compare"
        console.print(f"wrote {tradeoff.write_tradeoff_csv(trade, out_t / 'tradeoff.csv')}")
        png = tradeoff.plot_tradeoff(trade, out_t / "tradeoff.png")
        if png:
            console.print(f"wrote {png}")
        if not all(tradeoff.has_extraction(p) for p in runs):
            return None
    sides = [load_side(p, at, lab) for p, lab in zip(runs, _labels(runs))]
    if threshold is None:
        threshold = load_config(runs[0] / "config.yaml").audit.section("relaxed").threshold
    thresholds = load_config(runs[0] / "config.yaml").audit.section("relaxed").thresholds
    cmp = compare(sides, threshold=threshold, thresholds=thresholds, margin=margin,
                  reference=reference)
    if not console.is_terminal:
        console.width = max(console.width, 200)
    console.print(table(cmp))
    for n in cmp.notes:
        console.print(f"note: {n}")
    out = Path(out) if out else Path(runs[0]).parent / "compare"
    csv_path = write_csv(cmp, out / "compare.csv")
    png = plot_curves(cmp, out / "threshold_curves.png")
    (out / "notes.txt").write_text("\n".join(cmp.notes) + ("\n" if cmp.notes else ""))
    console.print(f"wrote {csv_path}, {csv_path.with_name('compare_curves.csv')}, {png}")
    return cmp


def relaxed_summary(run_dir) -> str | None:
    """One line on the relaxed probe's results at the run's last audited checkpoint (printed
    after `finemem audit --probes relaxed`), or None when it has none."""
    from finemem.analysis.extraction import extraction_rows
    from finemem.config import load_config

    t = load_config(Path(run_dir) / "config.yaml").audit.section("relaxed").threshold
    for r in reversed(extraction_rows(run_dir)):
        m = r.get("members", "relaxed_memorization_rate", threshold=t)
        n = r.get("nonmembers", "relaxed_memorization_rate", threshold=t)
        e = r.get("excess", "excess_over_nonmembers", outcome="relaxed", threshold=t)
        if m and n and e:
            def ci(x, sign=""):
                return f"{x['value']:{sign}.2f} [{x['lo']:{sign}.2f}, {x['hi']:{sign}.2f}]"
            return (f"Relaxed memorization (MiniLM cosine >= {t:g}) at {r.name}: members "
                    f"{ci(m)}, non-members {ci(n)}, excess {ci(e, '+')}; the curve over "
                    "thresholds: `finemem compare` or the store (relaxed_memorization_rate).")
    return None
