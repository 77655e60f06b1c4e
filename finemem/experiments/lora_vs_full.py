"""`finemem reproduce lora-vs-full` (paper 3): does LoRA (or training the head only) leak less of
the training data than full fine-tuning, at what task cost, and does full fine-tuning leak more
with duplication and with model size? The runs are in lora_vs_full.yaml; each is trained,
audited with the likelihood, extraction and relaxed probes, and compared from stored results
(`finemem.analysis.compare`). The section "experiment:lora-vs-full" of docs/REPLICATION.md is
rewritten with the numbers, their intervals and a verdict per claim; other sections stay.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path


from finemem.errors import UserError
from finemem.experiments import Experiment, register_experiment, with_machine_note


def merge(base: dict, over: dict) -> dict:
    """`base` with `over` merged in (nested dicts merge, anything else replaces)."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else \
            copy.deepcopy(v)
    return out


@register_experiment("lora-vs-full")
class LoraVsFull(Experiment):
    description = ("full vs LoRA vs head-only, duplication 1/4/16, two model sizes, audited "
                   "with the relaxed probe; writes its section of docs/REPLICATION.md")
    settings_file = "lora_vs_full.yaml"
    reproducible = True

    def plan(self) -> dict:
        plan = self.require(self.settings(), "run", "runs", "methods", "duplication", "size")
        named = [plan["methods"]["reference"], *plan["methods"]["others"],
                 *plan["duplication"], *plan["size"].values()]
        stray = sorted(set(named) - set(plan["runs"]))
        if stray:
            raise UserError(f"{', '.join(stray)} not among runs", source=self.settings_source,
                            field="runs")
        return plan

    def configs(self, out: Path) -> dict:
        from finemem.config import parse_config

        plan = self.plan()
        cfgs = {}
        for name, over in plan["runs"].items():
            raw = merge(plan["run"], over or {})
            raw["run_dir"] = str(Path(out) / name)
            raw.setdefault("audit", {})["relaxed"] = {"threshold": plan.get("threshold", 0.8)}
            cfgs[name] = parse_config(raw, source=f"{self.settings_source}: runs.{name}")
        return cfgs

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
            train(cfg)
            audit_run(cfg.run_dir, probes=["likelihood", "relaxed"])
            spent = json.loads(timing.read_text()) if timing.is_file() else {}
            spent[name] = spent.get(name, 0.0) + time.time() - t1
            write_text_atomic(timing, json.dumps(spent, indent=1))
        minutes = (time.time() - t0) / 60
        md = report(cfgs, plan, minutes=minutes,
                    plot=Path(doc).parent / "img" / "lora_vs_full_curves.png")
        write_doc_section(doc, "experiment:lora-vs-full", md)
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


def report(cfgs: dict, plan: dict, *, minutes: float, plot: Path | None = None) -> str:
    """The Markdown section, from the runs' stores (no model)."""
    from finemem.analysis.compare import compare, load_side, outcome_flags, plot_curves, wilson
    from finemem.metrics.extraction import bootstrap_diff_ci
    from finemem.metrics.relaxed import paired_diff_ci

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
    ex = c0.audit.section("extraction")
    dup = cfgs[plan["duplication"][-1]].data.duplication
    L = ["# Replication: LoRA vs full fine-tuning vs head-only (memorization leakage)", "",
         f"Produced by `finemem reproduce lora-vs-full` on {time.strftime('%Y-%m-%d')} (CPU; "
         f"training and auditing the {len(cfgs)} runs took {total:.0f} min in all, summed "
         f"over the invocations that did the work; this invocation {minutes:.0f} min; a rerun "
         "reuses finished runs and audits). "
         f"Task `{c0.data.train.source}`, {c0.data.train.n} training texts, loss on the "
         f"{'whole text' if c0.data.loss_on == 'all' else 'completion'}, texts clipped to "
         f"{c0.data.max_length} tokens, {c0.training.epochs} epochs, {c0.training.scheduler} "
         f"schedule. Each run is probed at its final checkpoint on all its training texts "
         f"(members) and on as many held-out texts of the same task (non-members): prefix "
         f"{ex.prefix_tokens} tokens -> greedy {ex.generate_tokens or ex.suffix_tokens} tokens "
         f"against the {ex.suffix_tokens}-token true suffix. **Relaxed** = MiniLM cosine of "
         f"generation and true suffix >= {t:g} (the paper gives no threshold: the curve over "
         f"0.5 .. 1.0 is below); **verbatim** = a shared run of >= {ex.verbatim_chars} "
         "characters with the example's own training text; **exact** = the whole suffix "
         "reproduced. Task cost = test PPL of the held-out answers. Intervals are 95% "
         "(Wilson for rates, paired bootstrap over the same examples for differences and "
         "reductions).", "",
         "## Every run, final checkpoint", "",
         "| run | method | model | repeats of the duplicated subset | test PPL | "
         f"relaxed >= {t:g}: members | non-members | excess | verbatim: members | "
         "exact: members |", "|---|---|---|---|---|---|---|---|---|---|"]
    cmp_all = {}
    for name, s in sides.items():
        mem = sorted(s.per["members"])
        non = sorted(s.per["nonmembers"])
        f = {o: (outcome_flags(s, "members", mem, o, t), outcome_flags(s, "nonmembers", non, o, t))
             for o in ("relaxed", "verbatim", "exact")}
        cmp_all[name] = f
        exc = f["relaxed"][0].mean() - f["relaxed"][1].mean()
        lo, hi = bootstrap_diff_ci(*f["relaxed"])
        method = s.settings["method"] + (f" (r{s.settings['lora_r']}, alpha "
                                         f"{s.settings['lora_alpha']:g})"
                                         if s.settings["lora_r"] else "")
        L.append(f"| {name} | {method}, lr {s.settings['lr']:g} | `{s.settings['model']}` | "
                 f"{s.settings['duplication']} | {_ppl(s)} | {_ci(wilson(f['relaxed'][0]))} | "
                 f"{_ci(wilson(f['relaxed'][1]))} | {_signed((exc, lo, hi))} | "
                 f"{_ci(wilson(f['verbatim'][0]))} | {_ci(wilson(f['exact'][0]))} |")

    # ---- claim 1: methods
    m = plan["methods"]
    cmp = compare([sides[m["reference"]], *[sides[o] for o in m["others"]]], threshold=t,
                  margin=margin, reference=m["reference"])
    if plot is not None:
        plot_curves(cmp, plot)
        L += ["", f"![relaxed memorization over thresholds, full vs LoRA vs head-only]"
                  f"({plot.parent.name}/{plot.name})"]
    ref_ppl = sides[m["reference"]].test_ppl
    L += ["", "## Claim: LoRA and head-only memorize clearly less than full fine-tuning, at "
          "little task cost", ""]
    reductions = {}
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
        L.append(f"- `{s.label}` vs `{m['reference']}`: reduction of relaxed memorization "
                 f"{_ci(red_r, pct=True)}, of verbatim {_ci(red_v, pct=True)}; relaxed excess "
                 f"over non-members {_signed(row.excess['relaxed'])} vs "
                 f"{_signed(cmp.rows[0].excess['relaxed'])} for full; {gap}. " + verdict + ".")
    L += ["- The figure shows each run's members (solid, 95% band) and non-members (dashed) "
          "at every threshold; the verdicts use the headline threshold."]
    L += [f"- Note: {n}." for n in cmp.notes]
    claimed = float(plan.get("claimed_reduction", 0.42))
    lora = next((o for o in m["others"] if sides[o].settings["method"] == "lora"), None)
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
        L += ["", f"- \"{claimed:.0%} lower on average\" (one summary of the paper; nobody "
              f"has verified it): LoRA's reduction of relaxed memorization here is {said}."]

    # ---- claim 2: duplication
    d = plan["duplication"]
    top = sides[d[-1]]
    man = _manifest(cfgs[d[-1]].run_dir)
    repeated = sorted(i for i, times in man.items() if times > 1 and i in top.per["members"])
    single = sorted(i for i, times in man.items() if times == 1 and i in top.per["members"])
    L += ["", "## Claim: full fine-tuning memorizes more with duplication", "",
          f"The same seeded {dup.fraction:.0%} of the training texts ({len(repeated)} texts) is "
          "repeated 1, 4 or 16 times per epoch (data.duplication; the run's manifest records "
          "it); the other texts are seen once per epoch in every run. Rates on the repeated "
          "subset:", "",
          f"| run | repeats | relaxed >= {t:g} (repeated texts) | verbatim (repeated) | "
          "exact (repeated) | relaxed (texts seen once) | test PPL |",
          "|---|---|---|---|---|---|---|"]
    for name in d:
        s = sides[name]
        L.append(f"| {name} | {s.settings['duplication']} | "
                 f"{_ci(wilson(outcome_flags(s, 'members', repeated, 'relaxed', t)))} | "
                 f"{_ci(wilson(outcome_flags(s, 'members', repeated, 'verbatim', t)))} | "
                 f"{_ci(wilson(outcome_flags(s, 'members', repeated, 'exact', t)))} | "
                 f"{_ci(wilson(outcome_flags(s, 'members', single, 'relaxed', t)))} | {_ppl(s)} |")
    L += ["", "Repeats make each epoch longer (more optimizer steps at the same number of "
          "epochs), so the texts seen once also get more updates: the last-but-one column "
          "shows how much of the rise is more training overall rather than repetition of "
          "these texts.", ""]
    lo_run, hi_run = sides[d[0]], sides[d[-1]]
    for o in ("relaxed", "verbatim"):
        diff = paired_diff_ci(outcome_flags(lo_run, "members", repeated, o, t),
                              outcome_flags(hi_run, "members", repeated, o, t))
        L.append(f"- {o}, repeated texts, {d[-1]} minus {d[0]}: {_signed(diff)}: "
                 + direction(diff, more="holds", less="reversed") + ".")
    for name in d:  # within one run: the same training, repeated vs seen-once texts
        s = sides[name]
        if s.settings["duplication"] <= 1 or not single:
            continue
        a = outcome_flags(s, "members", repeated, "relaxed", t)
        b = outcome_flags(s, "members", single, "relaxed", t)
        diff = (float(a.mean() - b.mean()), *bootstrap_diff_ci(a, b))
        same = a.mean() == b.mean() and a.mean() in (0.0, 1.0)
        L.append(f"- Within {name} (same training for both): relaxed, repeated minus "
                 f"seen-once texts {_signed(diff)}: "
                 + (f"**no contrast left** (both at {a.mean():.2f})" if same else
                    direction(diff, more="holds", less="reversed")) + ".")

    # ---- claim 3: size
    sz = plan["size"]
    small, large = sides[sz["smaller"]], sides[sz["larger"]]
    shared = sorted(set(small.per["members"]) & set(large.per["members"]))
    L += ["", "## Claim: full fine-tuning memorizes more with model size", "",
          f"`{small.settings['model']}` vs `{large.settings['model']}`, the same "
          f"{len(shared)} training texts and settings (the two sizes have their own tokenizers, "
          "so the prefix and suffix cover slightly different text):", ""]
    for o in ("relaxed", "verbatim", "exact"):
        fs = outcome_flags(small, "members", shared, o, t)
        fl = outcome_flags(large, "members", shared, o, t)
        diff = paired_diff_ci(fs, fl)
        L.append(f"- {o}: {sz['smaller']} {_ci(wilson(fs))}, {sz['larger']} {_ci(wilson(fl))}; "
                 f"larger minus smaller {_signed(diff)}: "
                 + direction(diff, more="holds", less="reversed") + ".")
    L.append(f"- Task cost: test PPL {_ppl(small)} ({sz['smaller']}) vs {_ppl(large)} "
             f"({sz['larger']})"
             + (": not at comparable task performance, so the larger model both fits the task "
                "better and memorizes more; the two are not separated here."
                if small.test_ppl and large.test_ppl and
                abs(small.test_ppl["value"] / large.test_ppl["value"] - 1) > margin else "."))
    L += ["", "What the numbers say: these are finemem's two smallest self-built bases on "
          f"{c0.data.train.n} templated texts, not the paper's 7B models; the non-members' "
          "column is the floor that the task's template alone reaches, so the excess is the "
          "memorization of these texts. Read the verdicts as what this setup shows."]
    return "\n".join(with_machine_note(L))


def _manifest(run_dir) -> dict[str, int]:
    import json

    out = {}
    for line in (Path(run_dir) / "manifest.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            out[str(row["id"])] = int(row["times_per_epoch"])
    return out
