"""`finemem reproduce mitigations`: what each mitigation costs and what it buys. The same task
and data (with repeats) are trained with no mitigation, LoRA, near-dedup, DP-SGD at epsilon 8
and 1, and the no-mitigation run is also read at its recommended (early) checkpoint; each is
audited with the likelihood, membership and canaries probes (coin-flip canaries, so the
one-run privacy audit gives an epsilon lower bound), and the table (`finemem.analysis.tradeoff`)
goes to the section "experiment:mitigations" of docs/MITIGATIONS.md with the utility-vs-leakage
plot (prose and tables in templates/mitigations.md.j2). The runs and rows are in
mitigations.yaml.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from finemem.errors import UserError
from finemem.experiments import Experiment, register_experiment, render_markdown

DOC = Path("docs/MITIGATIONS.md")


@register_experiment("mitigations")
class Mitigations(Experiment):
    description = ("no mitigation vs early checkpoint, LoRA, dedup, DP eps 8 and 1: task cost "
                   "vs leakage and the epsilon audit; writes docs/MITIGATIONS.md")
    settings_file = "mitigations.yaml"
    reproducible = True

    def plan(self) -> dict:
        plan = self.require(self.settings(), "run", "runs", "rows")
        stray = sorted({r.get("run") for r in plan["rows"]} - set(plan["runs"]), key=str)
        if stray:
            raise UserError(f"rows name runs not among runs: {', '.join(map(str, stray))}",
                            source=self.settings_source, field="rows")
        return plan

    def configs(self, out: Path) -> dict:
        return self.run_configs(self.plan(), out)

    def run(self, out: Path, *, doc: Path | None = None, console=None, **_) -> str:
        from rich.console import Console

        from finemem.analysis.tradeoff import print_tradeoff, tradeoff_row
        from finemem.audit import audit_run
        from finemem.io import write_doc_section, write_text_atomic
        from finemem.train import train

        # `finemem reproduce` passes its default doc (REPLICATION.md); this one has its own
        doc = DOC if doc is None or Path(doc).name == "REPLICATION.md" else Path(doc)
        console = console or Console()
        t0 = time.time()
        plan, cfgs = self.plan(), self.configs(out)
        timing = Path(out) / "timing.json"  # per run: wall and CPU seconds of train + audit
        for name, cfg in cfgs.items():
            console.rule(f"{name}: train and audit ({', '.join(cfg.audit.probes or [])})")
            w, c = time.time(), time.process_time()
            train(cfg, progress=self.progress)
            tw, tc = time.time() - w, time.process_time() - c
            audit_run(cfg.run_dir, probes=cfg.audit.probes, progress=self.progress)
            spent = json.loads(timing.read_text()) if timing.is_file() else {}
            old = spent.get(name, {})
            spent[name] = {"train_wall": old.get("train_wall", 0) + tw,
                           "train_cpu": old.get("train_cpu", 0) + tc,
                           "total_wall": old.get("total_wall", 0) + time.time() - w}
            write_text_atomic(timing, json.dumps(spent, indent=1))
        spent = json.loads(timing.read_text()) if timing.is_file() else {}
        rows = []
        for r in plan["rows"]:
            row = tradeoff_row(cfgs[r["run"]].run_dir, r.get("at", "final"), r["label"])
            if r["run"] in spent:  # the whole of `train` (setup, DP calibration, saves)
                row["train_seconds"] = spent[r["run"]]["train_wall"]
                row["train_cpu"] = spent[r["run"]]["train_cpu"]
            rows.append(row)
        if not self.quiet:
            print_tradeoff(rows, console)
        minutes = (time.time() - t0) / 60
        md = report(rows, cfgs, spent, minutes=minutes,
                    plot=Path(doc).parent / "img" / "mitigations.png",
                    settings=self.settings_source)
        write_doc_section(doc, "experiment:mitigations", md, header=HEADER)
        console.print(f"wrote the mitigations section of {doc} ({minutes:.1f} min)")
        return md


HEADER = "# Mitigations, measured\n\n"


def report(rows: list[dict], cfgs: dict, spent: dict, *, minutes: float, plot: Path,
           settings: str) -> str:
    """The Markdown section, from the runs' stores (no model), through
    templates/mitigations.md.j2."""
    from finemem.analysis.tradeoff import markdown_table, plot_tradeoff
    from finemem.metrics.privacy_audit import epsilon_from_guesses

    c0 = next(iter(cfgs.values()))
    d, t = c0.data, c0.training
    can = d.canaries
    m = (can.per_tier * len(can.tiers) + can.twins) * len(can.families) if can else 0
    png = plot_tradeoff(rows, plot)
    cpu = sum(v.get("train_cpu", 0) for v in spent.values()) / 60
    wall = sum(v.get("total_wall", 0) for v in spent.values()) / 60
    sec = c0.audit.section("canaries")
    m1 = m // len(can.tiers) if can else 0  # the candidates of one tier (tiers in turn)
    r_max = min(m1, 2 * math.ceil(sec.audit_guess_frac * m1))
    cap = epsilon_from_guesses(m1, r_max, r_max,
                               confidence=sec.audit_confidence) if can else float("nan")
    return render_markdown(
        "mitigations.md.j2", date=time.strftime("%Y-%m-%d"), settings=settings,
        wall=f"{wall:.1f}", cpu=f"{cpu:.1f}", model=c0.model, n=d.train.n,
        source=d.train.source, times=d.duplication.times, dup_seed=d.duplication.seed,
        epochs=t.epochs, lr=f"{t.lr:g}", batch=t.batch_size, m=m, table=markdown_table(rows),
        png=str(Path("img") / png.name) if png else None,
        notes=sorted({c for r in rows for c in r["dp_caveats"]}), m1=m1, r_max=r_max,
        cap=f"{cap:.2f}")
