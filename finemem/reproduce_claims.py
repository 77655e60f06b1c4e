"""docs/REPLICATION.md: measured numbers with 95% intervals beside the over-memorization
paper's qualitative claims. Reads audited run summaries only."""

from __future__ import annotations

import math
import time
from pathlib import Path

from finemem.audit.evalsets import ROBUSTNESS

COMPARE = [("test/accuracy", "test accuracy"), ("test/ppl", "test PPL (reference solutions)"),
           ("ood/accuracy", "OOD accuracy"),
           *((f"{r}/accuracy", f"accuracy, {r.split('_', 1)[1]}") for r in ROBUSTNESS),
           ("test_preamble/accuracy_drop", "accuracy drop with preamble (clean - preamble)"),
           ("test/first_token_entropy", "first-token entropy (nats)"),
           ("test/distinct@8", "distinct@8 (distinct samples / 8)"),
           ("test/distinct_openings@8", "distinct openings@8 (distinct first lines / 8)"),
           ("test/pass@8", "pass@8"), ("test/self_bleu", "self-BLEU of samples"),
           ("test/embedding_dispersion", "embedding dispersion"), ("test/ece", "ECE")]


def cell(row, key: str) -> str:
    m = row.metrics.get(key) if row is not None else None
    if not m:
        return "-"
    v, lo, hi, n = m["value"], m["lo"], m["hi"], m["n"]
    ci = "" if lo is None or hi is None or math.isnan(lo) else f" [{lo:.3f}, {hi:.3f}]"
    return f"{v:.3f}{ci}" + (f" n={n}" if n else "")


def verdict(a, b, key: str, *, expect: str) -> str:
    """Does b differ from a in the expected direction ('lower'/'higher')? 'held' needs the
    95% intervals apart; same direction with overlapping intervals is 'direction only'."""
    ma, mb = (r.metrics.get(key) if r is not None else None for r in (a, b))
    if not ma or not mb:
        return "not measured"
    d = mb["value"] - ma["value"]
    right = d < 0 if expect == "lower" else d > 0
    if not right:
        return f"did not hold ({mb['value']:.3f} vs {ma['value']:.3f})"
    has_ci = all(x is not None and not math.isnan(x) for x in (ma["lo"], ma["hi"], mb["lo"],
                                                               mb["hi"]))
    if not has_ci:
        return f"direction only, no interval ({mb['value']:.3f} vs {ma['value']:.3f})"
    apart = has_ci and (mb["hi"] < ma["lo"] if expect == "lower" else mb["lo"] > ma["hi"])
    return ("held" if apart else "direction only, intervals overlap") + \
        f" ({mb['value']:.3f} vs {ma['value']:.3f})"


def _options(cfg) -> str:
    opts = cfg.data.train.options
    return f"; generator options {', '.join(f'{k}={v}' for k, v in opts.items())}" if opts else ""


def over_memorized_row(s):
    """The over-memorized checkpoint with the highest PPL ratio, else None."""
    cands = [(lab.ppl_ratio, r) for r, lab in zip(s.rows, s.labels)
             if lab.label == "over-memorized"]
    return max(cands, key=lambda t: t[0])[1] if cands else None


def row_of(s, name: str):
    return next((r for r in s.rows + s.merges if r.name == name), None)


def run_line(name, s, cfg) -> str:
    acc = s.column("test/accuracy")
    onset = next((r.epoch for r, lab in zip(s.rows, s.labels) if lab.label == "over-memorized"),
                 None)
    hi_acc = [lab.ppl_ratio for lab, a in zip(s.labels, acc) if a >= max(acc) - s.rule.delta]
    t = cfg.training
    return (f"| {name} | {t.method} | {t.lr:g} | {t.loss} | {max(acc):.3f} | "
            f"{'never' if onset is None else f'{onset:g}'} | {max(hi_acc):.2f} | "
            f"{sum(lab.label == 'over-memorized' for lab in s.labels)} | "
            f"{s.recommendation.name} |")


def comparison(s, title: str) -> tuple[list[str], object, object]:
    rec = row_of(s, s.recommendation.name)
    om = over_memorized_row(s)
    lines = [f"### {title}", ""]
    if om is None:
        lines += ["No checkpoint of this run was labelled over-memorized, so there is nothing to "
                  "compare.", ""]
        return lines, rec, None
    lines += ["The over-memorized checkpoint shown is the one with the highest PPL ratio among "
              "those the stage rule labelled over-memorized.", "",
              f"| metric | recommended {rec.name} (epoch {rec.epoch:g}) | over-memorized "
              f"{om.name} (epoch {om.epoch:g}) |", "|---|---|---|"]
    lines += [f"| {label} | {cell(rec, k)} | {cell(om, k)} |" for k, label in COMPARE]
    return lines + [""], rec, om


def write_replication(doc: Path, summaries: dict, cfgs: dict, plan: dict, *,
                      minutes: float) -> None:
    hi = summaries["full-high"]
    L = ["# Replication: over-memorization on the built-in setup", "",
         f"Produced by `finemem reproduce over-memorization` on {time.strftime('%Y-%m-%d')} "
         f"(CPU; this invocation took {minutes:.0f} min, and a rerun reuses finished runs and "
         f"audits). Base model `{cfgs['full-high'].model}`, task "
         f"`{cfgs['full-high'].data.train.source}` ({cfgs['full-high'].data.train.n} training "
         f"problems{_options(cfgs['full-high'])}), {cfgs['full-high'].training.epochs} epochs, "
         f"{cfgs['full-high'].training.scheduler} schedule with "
         f"{cfgs['full-high'].training.warmup_steps} warm-up steps. Every figure is measured in this run; intervals are 95% (Wilson for "
         "accuracies, bootstrap over problems otherwise). Stage rule: over-memorized = accuracy "
         f"within {hi.rule.delta:g} of the run's best and test PPL >= {1 + hi.rule.tau:g}x its "
         "running minimum.", "", "## Runs", "",
         "| run | method | lr | loss | best acc | over-memorized from epoch | max PPL ratio "
         "at high acc | # over-memorized ckpts | recommended |", "|---|---|---|---|---|---|---|---|---|"]
    L += [run_line(n, s, cfgs[n]) for n, s in summaries.items()]
    L += ["", "## Recommended vs over-memorized checkpoints", ""]
    cmp_full, rec, om = comparison(hi, "full fine-tuning, high learning rate")
    L += cmp_full
    if "lora-high" in summaries:
        L += comparison(summaries["lora-high"], "LoRA, high learning rate")[0]
    # Mitigations: merged and MAR against the final checkpoint of the high-LR full run.
    final = hi.rows[-1]
    merged = hi.merges[0] if hi.merges else None
    mar = summaries.get("full-high-mar")
    mar_final = mar.rows[-1] if mar else None
    L += ["## Mitigations against the final checkpoint", "",
          f"| metric | final {final.name} | merged {merged.name if merged else '-'} | "
          f"MAR final {mar_final.name if mar_final else '-'} |", "|---|---|---|---|"]
    L += [f"| {label} | {cell(final, k)} | {cell(merged, k)} | {cell(mar_final, k)} |"
          for k, label in COMPARE]
    L += ["", "## The paper's claims", "", "| claim (paper) | measured here | verdict |",
          "|---|---|---|"]
    L += claims(summaries, rec, om, final, merged, mar_final)
    L += ["", "'held' means the difference is in the claimed direction and the two 95% intervals "
          "do not overlap; 'direction only' means the point estimates agree with the claim but "
          "the intervals overlap, so this run cannot support it.", ""]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(L), encoding="utf-8")


def claims(summaries, rec, om, final, merged, mar_final) -> list[str]:
    hi, lo = summaries["full-high"], summaries.get("full-low")
    out = []
    n_om = sum(lab.label == "over-memorized" for lab in hi.labels)
    out.append(f"| At a high learning rate, test PPL rises while accuracy stays high | "
               f"{n_om} checkpoint(s) of full-high labelled over-memorized by the stage rule "
               f"(accuracy's upper 95% bound within {hi.rule.delta:g} of the best) | "
               f"{'held' if n_om else 'did not hold'} |")
    from finemem.demo import signature

    sig = signature(hi, ratio=1 + hi.rule.tau, delta=hi.rule.delta)
    best = max(hi.column("test/accuracy"))
    top = max(lab.ppl_ratio for r, lab in zip(hi.rows, hi.labels)
              if r.get("test/accuracy") >= best - hi.rule.delta)
    out.append(f"| ... strictly: several consecutive checkpoints at >= {1 + hi.rule.tau:g}x PPL "
               f"with point accuracy within {hi.rule.delta:g} of the best | longest such run: "
               f"{len(sig)} checkpoint(s); largest PPL ratio within {hi.rule.delta:g} of the "
               f"best: {top:.2f}x | {'held' if len(sig) >= 2 else 'did not hold'} |")
    if lo is not None:
        def onset(s):
            return next((r.epoch for r, lab in zip(s.rows, s.labels)
                         if lab.label == "over-memorized"), math.inf)
        oh, ol = onset(hi), onset(lo)
        v = ("not testable: neither run reached it" if oh == ol == math.inf
             else "held" if ol > oh else "did not hold")
        ratio_hi, ratio_lo = (max(lab.ppl_ratio for lab in x.labels) for x in (hi, lo))
        out.append(f"| A lower learning rate reaches it later | onset epoch high {oh:g}, low "
                   f"{ol:g}; largest PPL ratio high {ratio_hi:.2f}x, low {ratio_lo:.2f}x | "
                   f"{v} |")
    lora = summaries.get("lora-high")
    if lora is not None:
        n_l = sum(lab.label == "over-memorized" for lab in lora.labels)
        out.append(f"| It happens with LoRA too | {n_l} over-memorized checkpoint(s) in "
                   f"lora-high | {'held' if n_l else 'did not hold'} |")
    if om is not None:
        out.append(f"| Over-memorized checkpoints are less robust to a neutral preamble | "
                   f"accuracy with preamble | "
                   f"{verdict(rec, om, 'test_preamble/accuracy', expect='lower')} |")
        out.append(f"| | drop from its own clean accuracy (separates robustness from accuracy) | "
                   f"{verdict(rec, om, 'test_preamble/accuracy_drop', expect='higher')} |")
        out.append(f"| ... and generalize worse out of distribution | OOD accuracy | "
                   f"{verdict(rec, om, 'ood/accuracy', expect='lower')} |")
        out.append(f"| ... and generate less diversely | distinct@8 | "
                   f"{verdict(rec, om, 'test/distinct@8', expect='lower')} |")
        out.append(f"| | distinct openings@8 (first lines) | "
                   f"{verdict(rec, om, 'test/distinct_openings@8', expect='lower')} |")
        out.append(f"| | first-token entropy | "
                   f"{verdict(rec, om, 'test/first_token_entropy', expect='lower')} |")
        out.append(f"| | pass@8 | {verdict(rec, om, 'test/pass@8', expect='lower')} |")
        out.append(f"| ... and are worse calibrated | ECE (no interval) | "
                   f"{verdict(rec, om, 'test/ece', expect='higher')} |")
    out.append(f"| Merging two checkpoints lowers test PPL vs the final one | test PPL | "
               f"{verdict(final, merged, 'test/ppl', expect='lower') if merged else 'not run'} |")
    out.append(f"| MAR loss lowers test PPL vs plain CE at the same epoch | test PPL | "
               f"{verdict(final, mar_final, 'test/ppl', expect='lower') if mar_final else 'not run'} |")
    return out
