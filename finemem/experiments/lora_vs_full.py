"""`finemem reproduce lora-vs-full` (paper 3): does LoRA (or training the head only) leak less of
the training data than full fine-tuning, at what task cost, and does full fine-tuning leak more
with duplication and with model size? The runs are in lora_vs_full.yaml; each is trained,
audited with the likelihood, extraction and relaxed probes, and compared from stored results
(`finemem.analysis.compare`). The section "experiment:lora-vs-full" of docs/REPLICATION.md is
rewritten with the numbers, their intervals and a verdict per claim; other sections stay.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path


from finemem.errors import UserError
from finemem.experiments import Experiment, merge, register_experiment  # noqa: F401


@register_experiment("lora-vs-full")
class LoraVsFull(Experiment):
    description = ("full vs LoRA vs head-only, duplication 1/4/16, two model sizes, audited "
                   "with the relaxed probe; writes its section of docs/REPLICATION.md")
    settings_file = "lora_vs_full.yaml"
    reproducible = True

    def plan(self) -> dict:
        # `size` is optional: one real model has no second size to compare with
        # `duplication` and `size` are optional (a real model's budget; one real model has no
        # second size to compare with): their claims then read "not run"
        plan = self.require(self.settings(), "run", "runs", "methods")
        named = [plan["methods"]["reference"], *plan["methods"]["others"],
                 *(plan.get("duplication") or []), *(plan.get("size") or {}).values()]
        stray = sorted(set(named) - set(plan["runs"]))
        if stray:
            raise UserError(f"{', '.join(stray)} not among runs", source=self.settings_source,
                            field="runs")
        return plan

    def configs(self, out: Path) -> dict:
        plan = self.plan()
        threshold = {"threshold": plan.get("threshold", 0.8)}
        return self.run_configs(plan, out, edit=lambda raw: raw.setdefault(
            "audit", {}).__setitem__("relaxed", dict(threshold)))

    def run(self, out: Path, *, doc: Path = Path("docs/REPLICATION.md"), console=None,
            **_) -> str:
        from rich.console import Console

        from finemem.audit import audit_run
        from finemem.io import write_doc_section, write_text_atomic
        from finemem.train import train

        console = console or Console()
        t0 = time.time()
        plan, cfgs = self.plan(), self.configs(out)
        timing = Path(out) / "timing.json"  # seconds per run, summed over invocations
        for name, cfg in cfgs.items():
            console.rule(f"{name}: train and audit (likelihood, extraction, relaxed)")
            t1 = time.time()
            train(cfg, progress=self.progress)
            audit_run(cfg.run_dir, probes=["likelihood", "relaxed"], progress=self.progress)
            spent = json.loads(timing.read_text()) if timing.is_file() else {}
            spent[name] = spent.get(name, 0.0) + time.time() - t1
            write_text_atomic(timing, json.dumps(spent, indent=1))
        minutes = (time.time() - t0) / 60
        md = report(cfgs, plan, minutes=minutes, plot=self.figure(doc, "lora_vs_full_curves"),
                    model=self.model)
        write_doc_section(doc, self.section(), md)
        console.print(f"wrote the lora-vs-full section of {doc} ({minutes:.1f} min)")
        return md


# ------------------------------------------------------------------ the report

def _ci(v, digits: int = 2, pct: bool = False) -> str:
    if v is None or v[0] is None or math.isnan(v[0]):
        return "-"
    if pct:
        return f"{v[0]:+.0%} [{v[1]:+.0%}, {v[2]:+.0%}]"
    return f"{v[0]:.{digits}f} [{v[1]:.{digits}f}, {v[2]:.{digits}f}]"


def _signed(v) -> str:
    return f"{v[0]:+.2f} [{v[1]:+.2f}, {v[2]:+.2f}]"


def direction(v, *, more: str, less: str) -> str:
    """'holds' wording from a (value, lo, hi) difference expected to be > 0."""
    d, lo, hi = v
    if math.isnan(d):
        return "**not measurable**"
    if lo > 0:
        return f"**{more}**"
    if hi < 0:
        return f"**{less}**"
    return "**not shown** (the interval covers 0)"


def _ppl(side) -> str:
    p = side.test_ppl
    return "-" if not p else f"{p['value']:.2f} [{p['lo']:.2f}, {p['hi']:.2f}]"


def report(cfgs: dict, plan: dict, *, minutes: float, plot: Path | None = None,
           model: str | None = None) -> str:
    """The Markdown section (templates/lora_vs_full.md.j2), from the runs' stores (no model
    is loaded); `model`: the real model of `reproduce --model`, named in the title."""
    from finemem.analysis.compare import compare, load_side, outcome_flags, wilson
    from finemem.experiments import render_markdown
    from finemem.report.compare import plot_curves
    from finemem.metrics.extraction import bootstrap_diff_ci

    t = float(plan.get("threshold", 0.8))
    margin = float(plan.get("margin", 0.25))
    sides = {}
    for name, cfg in cfgs.items():
        try:
            sides[name] = load_side(cfg.run_dir, "final", name)
        except UserError as e:
            raise UserError(f"{name}: {e}; run `finemem reproduce lora-vs-full`") from None
    timing = Path(next(iter(cfgs.values())).run_dir).parent / "timing.json"
    spent = json.loads(timing.read_text()) if timing.is_file() else {}
    total = sum(spent.get(n, 0.0) for n in cfgs) / 60
    c0 = cfgs[plan["methods"]["reference"]]
    dup = cfgs[(plan.get("duplication") or [plan["methods"]["reference"]])[-1]].data.duplication
    runs = []
    for name, s in sides.items():
        mem = sorted(s.per["members"])
        non = sorted(s.per["nonmembers"])
        f = {o: (outcome_flags(s, "members", mem, o, t), outcome_flags(s, "nonmembers", non, o, t))
             for o in ("relaxed", "verbatim", "exact")}
        exc = f["relaxed"][0].mean() - f["relaxed"][1].mean()
        lo, hi = bootstrap_diff_ci(*f["relaxed"])
        method = s.settings["method"] + (f" (r{s.settings['lora_r']}, alpha "
                                         f"{s.settings['lora_alpha']:g})"
                                         if s.settings["lora_r"] else "")
        runs.append([name, f"{method}, lr {s.settings['lr']:g}", f"`{s.settings['model']}`",
                     str(s.settings["duplication"]), _ppl(s), _ci(wilson(f["relaxed"][0])),
                     _ci(wilson(f["relaxed"][1])), _signed((exc, lo, hi)),
                     _ci(wilson(f["verbatim"][0])), _ci(wilson(f["exact"][0]))])

    # ---- claim 1: methods
    m = plan["methods"]
    cmp = compare([sides[m["reference"]], *[sides[o] for o in m["others"]]], threshold=t,
                  margin=margin, reference=m["reference"])
    if plot is not None:
        plot_curves(cmp, plot)
    ref_ppl = sides[m["reference"]].test_ppl
    method_claims, reductions = [], {}
    for row in cmp.rows[1:]:
        s = row.side
        red_r, red_v = row.reduction["relaxed"], row.reduction["verbatim"]
        reductions[s.label] = red_r
        gap = (f"test PPL {s.test_ppl['value'] / ref_ppl['value'] - 1:+.0%} vs full"
               if s.test_ppl and ref_ppl else "test PPL missing")
        less = [w for w, r in (("relaxed", red_r), ("verbatim", red_v))
                if not math.isnan(r[0]) and r[1] > 0]
        if less and row.comparable:
            verdict = (f"**holds**: it memorizes less ({' and '.join(less)}) at comparable "
                       f"task performance ({gap}, within the {margin:.0%} margin)")
        elif less:
            verdict = (f"**less memorization, but not at comparable task performance** "
                       f"({gap}, beyond the {margin:.0%} margin): part of the reduction is a "
                       "weaker fit")
        elif any(not math.isnan(r[0]) and r[2] < 0 for r in (red_r, red_v)):
            verdict = "**reversed**: it memorizes more than full fine-tuning"
        else:
            verdict = "**not shown**: the reductions' intervals cover 0 (or are undefined)"
        method_claims.append(
            f"`{s.label}` vs `{m['reference']}`: reduction of relaxed memorization "
            f"{_ci(red_r, pct=True)}, of verbatim {_ci(red_v, pct=True)}; relaxed excess "
            f"over non-members {_signed(row.excess['relaxed'])} vs "
            f"{_signed(cmp.rows[0].excess['relaxed'])} for full; {gap}. " + verdict + ".")
    claimed = float(plan.get("claimed_reduction", 0.42))
    lora = next((o for o in m["others"] if sides[o].settings["method"] == "lora"), None)
    said = None
    if lora is not None:
        r = reductions[lora]
        if math.isnan(r[0]):
            said = "not measurable here (full fine-tuning memorizes none at this threshold)"
        elif r[1] <= claimed <= r[2] and r[1] <= 0:
            said = (f"{_ci(r, pct=True)}: the interval covers both 0 and {claimed:.0%}, so "
                    "this setup can neither confirm nor refute the figure")
        elif r[1] <= claimed <= r[2]:
            said = (f"consistent with {claimed:.0%} (measured {_ci(r, pct=True)}), which is "
                    "not a confirmation of the figure: the interval is wide")
        else:
            said = (f"not reproduced: the measured reduction is {_ci(r, pct=True)}, whose "
                    f"interval excludes {claimed:.0%}")

    # ---- claim 2: duplication (not run when the settings name no duplication runs)
    d = plan.get("duplication") or []
    dup_runs, dup_claims, n_repeated = (_duplication(cfgs, sides, d, t) if d else ([], [], 0))

    # ---- claim 3: size (not run when the settings name no second size)
    sz = plan.get("size") or {}
    size_claims, n_shared, small_model, large_model = [], 0, "", ""
    if sz:
        small, large = sides[sz["smaller"]], sides[sz["larger"]]
        small_model, large_model = small.settings["model"], large.settings["model"]
        size_claims = _size_claims(small, large, sz, t, margin)
        n_shared = len(set(small.per["members"]) & set(large.per["members"]))
    text = render_markdown(
        "lora_vs_full.md.j2", date=time.strftime("%Y-%m-%d"), n_runs=len(cfgs), total=total,
        minutes=minutes, c0=c0, ex=c0.audit.section("extraction"), t=f"{t:g}", runs=runs,
        plot=f"{plot.parent.name}/{plot.name}" if plot is not None else None,
        method_claims=method_claims, notes=cmp.notes, claimed=f"{claimed:.0%}",
        lora_said=said, dup_fraction=f"{dup.fraction:.0%}", n_repeated=n_repeated,
        dup_runs=dup_runs, dup_claims=dup_claims, small_model=small_model,
        large_model=large_model, n_shared=n_shared, size_claims=size_claims, model=model,
        tried=plan.get("tried") or [])
    return text.removesuffix("\n")


def _duplication(cfgs: dict, sides: dict, d: list[str], t: float):
    """(table rows, claim lines, number of repeated texts) of the duplication claim: the runs
    `d`, in order of repeats, on the subset the last one repeats."""
    from finemem.analysis.compare import outcome_flags, wilson
    from finemem.metrics.extraction import bootstrap_diff_ci
    from finemem.metrics.relaxed import paired_diff_ci

    top = sides[d[-1]]
    man = _manifest(cfgs[d[-1]].run_dir)
    repeated = sorted(i for i, times in man.items() if times > 1 and i in top.per["members"])
    single = sorted(i for i, times in man.items() if times == 1 and i in top.per["members"])
    dup_runs = []
    for name in d:
        s = sides[name]
        dup_runs.append([name, str(s.settings["duplication"])]
                        + [_ci(wilson(outcome_flags(s, "members", repeated, o, t)))
                           for o in ("relaxed", "verbatim", "exact")]
                        + [_ci(wilson(outcome_flags(s, "members", single, "relaxed", t))),
                           _ppl(s)])
    lo_run, hi_run = sides[d[0]], sides[d[-1]]
    dup_claims = []
    for o in ("relaxed", "verbatim"):
        diff = paired_diff_ci(outcome_flags(lo_run, "members", repeated, o, t),
                              outcome_flags(hi_run, "members", repeated, o, t))
        dup_claims.append(f"{o}, repeated texts, {d[-1]} minus {d[0]}: {_signed(diff)}: "
                          + direction(diff, more="holds", less="reversed") + ".")
    for name in d:  # within one run: the same training, repeated vs seen-once texts
        s = sides[name]
        if s.settings["duplication"] <= 1 or not single:
            continue
        a = outcome_flags(s, "members", repeated, "relaxed", t)
        b = outcome_flags(s, "members", single, "relaxed", t)
        diff = (float(a.mean() - b.mean()), *bootstrap_diff_ci(a, b))
        same = a.mean() == b.mean() and a.mean() in (0.0, 1.0)
        dup_claims.append(f"Within {name} (same training for both): relaxed, repeated minus "
                          f"seen-once texts {_signed(diff)}: "
                          + (f"**no contrast left** (both at {a.mean():.2f})" if same else
                             direction(diff, more="holds", less="reversed")) + ".")
    return dup_runs, dup_claims, len(repeated)


def _size_claims(small, large, sz: dict, t: float, margin: float) -> list[str]:
    """The size claim's lines: the same training texts, the smaller vs the larger model."""
    from finemem.analysis.compare import outcome_flags, wilson
    from finemem.metrics.relaxed import paired_diff_ci

    shared = sorted(set(small.per["members"]) & set(large.per["members"]))
    out = []
    for o in ("relaxed", "verbatim", "exact"):
        fs = outcome_flags(small, "members", shared, o, t)
        fl = outcome_flags(large, "members", shared, o, t)
        diff = paired_diff_ci(fs, fl)
        out.append(f"{o}: {sz['smaller']} {_ci(wilson(fs))}, {sz['larger']} "
                   f"{_ci(wilson(fl))}; larger minus smaller {_signed(diff)}: "
                   + direction(diff, more="holds", less="reversed") + ".")
    out.append(
        f"Task cost: test PPL {_ppl(small)} ({sz['smaller']}) vs {_ppl(large)} "
        f"({sz['larger']})"
        + (": not at comparable task performance, so the larger model both fits the task "
           "better and memorizes more; the two are not separated here."
           if small.test_ppl and large.test_ppl and
           abs(small.test_ppl["value"] / large.test_ppl["value"] - 1) > margin else "."))
    return out


def _manifest(run_dir) -> dict[str, int]:
    import json

    out = {}
    for line in (Path(run_dir) / "manifest.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            out[str(row["id"])] = int(row["times_per_epoch"])
    return out
