"""`finemem reproduce task-disparity` (paper 2): does the fine-tuning task change how much is
memorized? The same base is fine-tuned on each built-in text task with the same budget
(task_disparity.yaml), every checkpoint is audited with the extraction probe, and the tasks
are compared the way the paper's reviewers asked: as excess over the non-member floor, with
intervals, over the whole curve (onset epoch, area) and within length bins. The section
"experiment:task-disparity" of docs/REPLICATION.md is rewritten; the other sections stay.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import numpy as np

from finemem.errors import UserError
from finemem.experiments import Experiment, register_experiment

OUTCOMES = ("verbatim", "any", "exact_greedy_extractable")


def _fill(obj, task: str):
    if isinstance(obj, dict):
        return {k: _fill(v, task) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fill(v, task) for v in obj]
    return obj.replace("{task}", task) if isinstance(obj, str) else obj


@register_experiment("task-disparity")
class TaskDisparity(Experiment):
    description = ("the same base fine-tuned on each built-in text task, extraction-audited; "
                   "writes its section of docs/REPLICATION.md")
    settings_file = "task_disparity.yaml"
    reproducible = True

    def plan(self) -> dict:
        plan = self.require(self.settings(), "tasks", "high", "low", "run")
        stray = sorted(set(plan["high"] + plan["low"]) - set(plan["tasks"]))
        if stray:
            raise UserError(f"{', '.join(stray)} not among tasks",
                            source=self.settings_source, field="high")
        return plan

    def configs(self, out: Path) -> dict:
        plan = self.plan()
        cfgs = {}
        for task in plan["tasks"]:
            raw = self.set_model(_fill(copy.deepcopy(plan["run"]), task))
            raw["run_dir"] = str(Path(out) / task)
            cfgs[task] = self.parse_run(raw, source=f"{self.settings_source}: run ({task})")
        return cfgs

    def run(self, out: Path, *, doc: Path = Path("docs/REPLICATION.md"), console=None,
            **_) -> str:
        from rich.console import Console

        from finemem.audit import audit_run
        from finemem.io import write_doc_section
        from finemem.train import train

        console = console or Console()
        t0 = time.time()
        plan, cfgs = self.plan(), self.configs(out)
        for task, cfg in cfgs.items():
            console.rule(f"{task}: train and audit (extraction, attention)")
            train(cfg, progress=self.progress)
            audit_run(cfg.run_dir, probes=["extraction", "attention"], progress=self.progress)
        minutes = (time.time() - t0) / 60
        md = report(cfgs, plan, minutes=minutes, plot=self.figure(doc, "task_disparity"),
                    model=self.model)
        write_doc_section(doc, self.section(), md)
        console.print(f"wrote the task-disparity section of {doc} ({minutes:.1f} min)")
        return md


# ------------------------------------------------------------------ the report

def _ci(m: dict | None, digits: int = 2) -> str:
    if m is None or m.get("value") is None or math.isnan(m["value"]):
        return "-"
    return f"{m['value']:.{digits}f} [{m['lo']:.{digits}f}, {m['hi']:.{digits}f}]"


def _verdict(diff: tuple[float, float, float], what: str) -> str:
    d, lo, hi = diff
    if lo > 0:
        return f"**holds** ({what}: {d:+.2f} [{lo:+.2f}, {hi:+.2f}])"
    if hi < 0:
        return f"**reversed** ({what}: {d:+.2f} [{lo:+.2f}, {hi:+.2f}])"
    return f"**not shown** ({what}: {d:+.2f} [{lo:+.2f}, {hi:+.2f}], the interval covers 0)"


def report(cfgs: dict, plan: dict, *, minutes: float, plot: Path | None = None,
           model: str | None = None) -> str:
    """The Markdown section: per-task table at the final checkpoint, curve numbers, the
    high-vs-low contrast overall and within length bins, and what it means for the claim."""
    from finemem.analysis.extraction import (curve_area, example_outcomes, excess,
                                             extraction_rows, group_contrast, onset_epoch)
    from finemem.experiments import render_markdown

    rows = {t: extraction_rows(c.run_dir) for t, c in cfgs.items()}
    missing = [t for t, r in rows.items() if not r]
    if missing:
        raise UserError(f"no extraction results for {', '.join(missing)}; run the experiment")
    c0 = next(iter(cfgs.values()))
    ex = c0.audit.section("extraction")
    final = {t: r[-1] for t, r in rows.items()}
    tasks = []
    areas, medians = {}, {}
    for t, r in final.items():
        mem = r.get("members", "exact_greedy_extractable") or {}
        lens = example_outcomes(cfgs[t].run_dir, r.name)["members"][1]
        onset = onset_epoch(rows[t], "verbatim")
        area = curve_area(rows[t], "excess", "excess_over_nonmembers", outcome="verbatim")
        areas[t], medians[t] = area, float(np.median(lens)) if lens.size else math.nan
        tasks.append([t, str(mem.get("n", "-")),
                      str(int(np.median(lens))) if lens.size else "-", _ci(mem),
                      _ci(r.get("members", "memorization_ratio", category="verbatim")),
                      _ci(r.get("nonmembers", "memorization_ratio", category="verbatim")),
                      _ci(excess(r, "verbatim")), _ci(excess(r, "any")),
                      "-" if onset is None else f"{onset:g}",
                      "-" if math.isnan(area) else f"{area:.2f}"])
    if plot is not None:
        _plot(rows, plot)
    # The claim: high-group tasks memorize more than low-group tasks.
    claims = []
    per = {t: {o: example_outcomes(cfgs[t].run_dir, final[t].name, o) for o in OUTCOMES}
           for t in cfgs}

    def groups(outcome, keep=lambda lens: np.ones(lens.size, bool)):
        g = {}
        for side in ("high", "low"):
            g[side] = []
            for t in plan[side]:
                d = per[t][outcome]
                m, n = keep(d["members"][1]), keep(d["nonmembers"][1])
                if m.sum() >= 5 and n.sum() >= 5:
                    g[side].append({"members": d["members"][0][m],
                                    "nonmembers": d["nonmembers"][0][n]})
        return g

    for outcome, what in (("verbatim", "verbatim"), ("any", "any category"),
                          ("exact_greedy_extractable", "exact suffix")):
        g = groups(outcome)
        claims.append(f"Overall, {what}: "
                 + (_verdict(group_contrast(g), "high minus low excess")
                    if g["high"] and g["low"] else "not measurable"))
    edges = list(ex.length_bins)
    bins = [(f"<{edges[0]}", lambda x: x < edges[0])]
    bins += [(f"{a}-{b - 1}", lambda x, a=a, b=b: (x >= a) & (x < b))
             for a, b in zip(edges, edges[1:])]
    bins += [(f">={edges[-1]}", lambda x: x >= edges[-1])]
    for name, keep in bins:
        g = groups("verbatim", keep)
        if g["high"] and g["low"]:
            used = f"{len(g['high'])} high-group and {len(g['low'])} low-group tasks"
            claims.append(f"Within length bin {name} tokens ({used} with >= 5 members and "
                     f"non-members there), verbatim: "
                     + _verdict(group_contrast(g), "high minus low excess"))
        else:
            claims.append(f"Within length bin {name} tokens: not comparable (a group has no task "
                     "with >= 5 members and non-members in the bin)")
    attention = []
    tot = {"heads": 0, "up": 0, "down": 0}
    for t, r in final.items():
        rhos = [m for (split, name, setting), m in r.metrics.items()
                if split == "members" and name == "spearman_rho"
                and json.loads(setting or "{}").get("stat") == "entropy"]
        # an undefined rho (a constant column) is stored as None or NaN
        vals = [m["value"] for m in rhos if m["value"] is not None and m["value"] == m["value"]]
        if not rhos:
            attention.append(f"| {t} | - | not measured | | |")
            continue
        up = sum(m["lo"] is not None and m["lo"] > 0 for m in rhos)
        down = sum(m["hi"] is not None and m["hi"] < 0 for m in rhos)
        tot["heads"] += len(rhos)
        tot["up"] += up
        tot["down"] += down
        attention.append(f"| {t} | {len(rhos)} | {np.median(vals):+.2f} | {up} | {down} |"
                         if vals else f"| {t} | {len(rhos)} | undefined (constant) | | |")
    summary = None
    if tot["heads"]:
        share = (tot["up"] + tot["down"]) / tot["heads"]
        summary = (f"Over all tasks, {tot['up']} of {tot['heads']} heads have rho reliably "
                   f"above 0 and {tot['down']} reliably below 0. "
                   + ("No consistent sign: at this scale memorized examples do not go with "
                      "more uniform attention." if share < 0.25 or min(tot["up"], tot["down"]) > 0
                      else ("The paper's sign holds in most heads that show one." if tot["up"] >
                            tot["down"] else "The sign is the opposite of the paper's.")))
    by_area = sorted(areas, key=lambda t: -areas[t] if not math.isnan(areas[t]) else 1)
    by_len = sorted(medians, key=lambda t: -medians[t] if not math.isnan(medians[t]) else 1)
    order = (" > ".join(f"{t} ({areas[t]:.2f})" for t in by_area)
             + "; by median tokens per probed text: "
             + " > ".join(f"{t} ({medians[t]:.0f})" for t in by_len))
    text = render_markdown(
        "task_disparity.md.j2", model=model, date=time.strftime("%Y-%m-%d"), minutes=minutes,
        c0=c0, ex=ex,
        lr=f"{c0.training.lr:g}", tasks=tasks,
        plot=f"{plot.parent.name}/{plot.name}" if plot is not None else None, claims=claims,
        attention=attention, attention_summary=summary, order=order)
    return text.removesuffix("\n")


def _plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from finemem.analysis.extraction import excess

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    for t, rs in rows.items():
        pts = [(r.epoch, excess(r, "verbatim")) for r in rs]
        pts = [(e, m) for e, m in pts if m is not None]
        x = [e for e, _ in pts]
        ax.plot(x, [m["value"] for _, m in pts], marker="o", label=t)
        ax.fill_between(x, [m["lo"] for _, m in pts], [m["hi"] for _, m in pts], alpha=0.15)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("verbatim: members - non-members")
    ax.set_title("Memorization by task (95% intervals)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
