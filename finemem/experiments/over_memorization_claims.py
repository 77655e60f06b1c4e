"""docs/REPLICATION.md: measured numbers with 95% intervals beside the over-memorization
paper's qualitative claims. Reads audited run summaries only.

Which run plays which part (the high-LR full run, the low-LR one, LoRA, MAR, the merged run)
comes from the experiment's roles (over_memorization.yaml). The direction each claim predicts
comes from the metric registry, never from this file: "over-memorized checkpoints are worse"
is the opposite of the metric's `higher_is_better`, "less diverse" is its
`more_memorized_when`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from finemem.analysis.summary import ACC, PPL

OVERMEM = "over-memorized"


def _robustness() -> tuple[str, ...]:
    from finemem.audit.evalsets import ROBUSTNESS

    return ROBUSTNESS


@dataclass(frozen=True)
class Measure:
    """One stored metric: key "split/<registry name>", its settings, and a label for tables."""

    key: str
    label: str
    settings: dict = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return self.key.split("/", 1)[1]


def compared(k: int) -> list[Measure]:
    """What the comparison tables show, k = samples per prompt of the audit."""
    return [Measure(ACC, "test accuracy"), Measure(PPL, "test PPL (reference solutions)"),
            Measure("ood/answer_accuracy", "OOD accuracy"),
            *(Measure(f"{r}/answer_accuracy", f"accuracy, {r.split('_', 1)[1]}")
              for r in _robustness()),
            Measure("test_preamble/accuracy_drop",
                    "accuracy drop with preamble (clean - preamble)"),
            Measure("test/first_token_entropy", "first-token entropy (nats)"),
            Measure("test/distinct_fraction", f"distinct@{k} (distinct samples / {k})",
                    {"k": k, "first_line": False}),
            Measure("test/distinct_fraction",
                    f"distinct openings@{k} (distinct first lines / {k})",
                    {"k": k, "first_line": True}),
            Measure("test/mean_pass_at_k", f"pass@{k}", {"k": k}),
            Measure("test/self_bleu", "self-BLEU of samples", {"k": k}),
            Measure("test/embedding_dispersion", "embedding dispersion", {"k": k}),
            Measure("test/expected_calibration_error", "ECE")]


def expected(metric: str, claim: str) -> str:
    """The direction ('higher' or 'lower') a claim predicts for `metric`, from the registry:
    'worse' / 'better' read `higher_is_better`; 'more memorized' reads `more_memorized_when`
    (the metric on the model's own samples, or on training examples)."""
    from finemem.metrics import get_metric

    info = get_metric(metric)
    if claim == "better":
        return "higher" if info.higher_is_better else "lower"
    if claim == "worse":
        return "lower" if info.higher_is_better else "higher"
    if claim == "more memorized":
        if info.more_memorized_when is None:
            raise ValueError(f"metric '{metric}' says nothing about memorization "
                             "(more_memorized_when is None)")
        return info.more_memorized_when
    raise ValueError(f"unknown claim {claim!r}: better, worse or more memorized")


def _stored(row, key: str, settings: dict) -> dict | None:
    return row.find(key, **settings) if row is not None else None


def _finite(*xs) -> bool:
    return all(x is not None and not math.isnan(x) for x in xs)


def cell(row, key: str, **settings) -> str:
    m = _stored(row, key, settings)
    if not m:
        return "-"
    v, lo, hi, n = m["value"], m.get("lo"), m.get("hi"), m.get("n")
    ci = f" [{lo:.3f}, {hi:.3f}]" if _finite(lo, hi) else ""
    return f"{v:.3f}{ci}" + (f" n={n}" if n else "")


def verdict(a, b, key: str, *, expect: str, **settings) -> str:
    """Does b differ from a in the expected direction ('lower'/'higher')? 'held' needs the
    95% intervals apart; same direction with overlapping intervals is 'direction only'."""
    ma, mb = _stored(a, key, settings), _stored(b, key, settings)
    if not ma or not mb:
        return "not measured"
    d = mb["value"] - ma["value"]
    right = d < 0 if expect == "lower" else d > 0
    nums = f"({mb['value']:.3f} vs {ma['value']:.3f})"
    if not right:
        return f"did not hold {nums}"
    if not _finite(ma.get("lo"), ma.get("hi"), mb.get("lo"), mb.get("hi")):
        return f"direction only, no interval {nums}"
    apart = mb["hi"] < ma["lo"] if expect == "lower" else mb["lo"] > ma["hi"]
    return ("held" if apart else "direction only, intervals overlap") + f" {nums}"


def claim_verdict(a, b, m: Measure, claim: str) -> str:
    """`verdict` with the direction `claim` ('worse', 'better', 'more memorized') predicts for
    the measure's metric."""
    return verdict(a, b, m.key, expect=expected(m.metric, claim), **m.settings)


def _options(cfg) -> str:
    opts = cfg.data.train.options
    return f"; generator options {', '.join(f'{k}={v}' for k, v in opts.items())}" if opts else ""


def over_memorized_row(s):
    """The over-memorized checkpoint with the highest PPL ratio, else None."""
    cands = [(lab.ppl_ratio, r) for r, lab in zip(s.rows, s.labels) if lab.label == OVERMEM]
    return max(cands, key=lambda t: t[0])[1] if cands else None


def ratio_near_best(s) -> float:
    """The largest PPL ratio among checkpoints whose point accuracy is within delta of the
    run's best."""
    acc = s.column(ACC)
    best = max(acc)
    return max((lab.ppl_ratio for a, lab in zip(acc, s.labels) if a >= best - s.rule.delta),
               default=math.nan)


def run_line(name, s, cfg) -> str:
    onset = s.first(OVERMEM)
    t = cfg.training
    return (f"| {name} | {t.method} | {t.lr:g} | {t.loss} | {max(s.column(ACC)):.3f} | "
            f"{'never' if onset is None else f'{onset.epoch:g}'} | {ratio_near_best(s):.2f} | "
            f"{len(s.with_label(OVERMEM))} | {s.recommendation.name} |")


def comparison(s, title: str) -> dict:
    """The recommended checkpoint of summary `s` beside its over-memorized one (the one with
    the highest PPL ratio; None when there is none): the template's `comparisons` entry."""
    rec = s.row(s.recommendation.name)
    om = over_memorized_row(s)
    rows = [] if om is None else [(m.label, cell(rec, m.key, **m.settings),
                                   cell(om, m.key, **m.settings)) for m in compared(s.k_samples)]
    return {"title": title, "rec": rec, "om": om, "rows": rows, "rec_epoch": f"{rec.epoch:g}",
            "om_epoch": f"{om.epoch:g}" if om is not None else None}


def write_replication(doc: Path, summaries: dict, cfgs: dict, roles: dict, *,
                      minutes: float, section: str = "experiment:over-memorization",
                      model: str | None = None) -> None:
    """Write the report (templates/over_memorization.md.j2) into `section` of `doc`. `roles`
    maps a role (high_lr, low_lr, lora, mar, merge) to a run name, a key of `summaries` and
    `cfgs`; only high_lr is required. `model`: the real model of `reproduce --model`."""
    from finemem.experiments import render_markdown
    from finemem.io import write_doc_section

    high = roles["high_lr"]
    hi, c = summaries[high], cfgs[high]
    comparisons = [comparison(hi, f"{high}: full fine-tuning, high learning rate")]
    rec, om = comparisons[0]["rec"], comparisons[0]["om"]
    if roles.get("lora") in summaries:
        comparisons.append(comparison(summaries[roles["lora"]],
                                      f"{roles['lora']}: LoRA, high learning rate"))
    # Mitigations: the merge against its run's final checkpoint, MAR against high_lr's final.
    final = hi.rows[-1]
    merged_run = summaries.get(roles.get("merge"))
    merged = merged_run.merges[0] if merged_run is not None and merged_run.merges else None
    merged_final = merged_run.rows[-1] if merged_run is not None else None
    mar = summaries.get(roles.get("mar"))
    mar_final = mar.rows[-1] if mar is not None else None
    text = render_markdown(
        "over_memorization.md.j2", model=model, date=time.strftime("%Y-%m-%d"),
        minutes=minutes, c=c,
        options=_options(c), delta=f"{hi.rule.delta:g}", tau=f"{1 + hi.rule.tau:g}",
        run_lines=[run_line(n, s, cfgs[n]) for n, s in summaries.items()],
        comparisons=comparisons, final=final, high=high,
        merged_name=merged.name if merged else "-",
        mar_name=mar_final.name if mar_final else "-",
        mitigations=[(m.label, cell(final, m.key, **m.settings), cell(merged, m.key, **m.settings),
                      cell(mar_final, m.key, **m.settings)) for m in compared(hi.k_samples)],
        claims=claims(summaries, roles, rec, om)
        + mitigation_claims(merged_final, merged, final, mar_final))
    doc.parent.mkdir(parents=True, exist_ok=True)
    # The document's other sections (e.g. task-disparity) are left as they are.
    write_doc_section(doc, section, text)


def checkpoint_claims(rec, om, k: int) -> list[tuple[str, Measure, str]]:
    """(claim, measure, predicted change) comparing the over-memorized checkpoint with the
    recommended one."""
    out = [("Over-memorized checkpoints are less robust to a neutral preamble",
            Measure("test_preamble/answer_accuracy", "accuracy with preamble"), "worse"),
           ("", Measure("test_preamble/accuracy_drop",
                        "drop from its own clean accuracy (separates robustness from accuracy)"),
            "worse")]
    out += [("", Measure(f"{r}/answer_accuracy", f"accuracy, {r.split('_', 1)[1]}"), "worse")
            for r in _robustness() if r != "test_preamble"
            if any(x is not None and x.has(f"{r}/answer_accuracy") for x in (rec, om))]
    out += [("... and generalize worse out of distribution",
             Measure("ood/answer_accuracy", "OOD accuracy"), "worse"),
            ("... and generate less diversely",
             Measure("test/distinct_fraction", f"distinct@{k}", {"k": k, "first_line": False}),
             "more memorized"),
            ("", Measure("test/distinct_fraction", f"distinct openings@{k} (first lines)",
                         {"k": k, "first_line": True}), "more memorized"),
            ("", Measure("test/first_token_entropy", "first-token entropy"), "more memorized"),
            ("", Measure("test/self_bleu", "self-BLEU of samples", {"k": k}), "more memorized"),
            (f"... and solve fewer problems in {k} tries",
             Measure("test/mean_pass_at_k", f"pass@{k}", {"k": k}), "worse"),
            ("... and are worse calibrated",
             Measure("test/expected_calibration_error", "ECE (no interval)"), "worse")]
    return out


def claims(summaries: dict, roles: dict, rec, om) -> list[str]:
    from finemem.analysis.stages import longest_stretch

    high = roles["high_lr"]
    hi = summaries[high]
    out = []
    n_om = len(hi.with_label(OVERMEM))
    out.append(f"| At a high learning rate, test PPL rises while accuracy stays high | "
               f"{n_om} checkpoint(s) of {high} labelled over-memorized by the stage rule "
               f"(accuracy's upper 95% bound within {hi.rule.delta:g} of the best) | "
               f"{'held' if n_om else 'did not hold'} |")
    sig = longest_stretch(hi.column(ACC), [lab.ppl_ratio for lab in hi.labels],
                          ratio=1 + hi.rule.tau, delta=hi.rule.delta)
    out.append(f"| ... strictly: several consecutive checkpoints at >= {1 + hi.rule.tau:g}x PPL "
               f"with point accuracy within {hi.rule.delta:g} of the best | longest such run: "
               f"{len(sig)} checkpoint(s); largest PPL ratio within {hi.rule.delta:g} of the "
               f"best: {ratio_near_best(hi):.2f}x | "
               f"{'held' if len(sig) >= 2 else 'did not hold'} |")
    lo = summaries.get(roles.get("low_lr"))
    if lo is not None:
        def onset(s) -> float:
            row = s.first(OVERMEM)
            return math.inf if row is None else row.epoch
        oh, ol = onset(hi), onset(lo)
        v = ("not testable: neither run reached it" if oh == ol == math.inf
             else "held" if ol > oh else "did not hold")
        ratio_hi, ratio_lo = (max(lab.ppl_ratio for lab in x.labels) for x in (hi, lo))
        def fmt(epoch: float) -> str:
            return "never" if epoch == math.inf else f"{epoch:g}"
        out.append(f"| A lower learning rate reaches it later | onset epoch high {fmt(oh)}, low "
                   f"{fmt(ol)}; largest PPL ratio high {ratio_hi:.2f}x, low {ratio_lo:.2f}x | "
                   f"{v} |")
    lora = summaries.get(roles.get("lora"))
    if lora is not None:
        n_l = len(lora.with_label(OVERMEM))
        out.append(f"| It happens with LoRA too | {n_l} over-memorized checkpoint(s) in "
                   f"{roles['lora']} | {'held' if n_l else 'did not hold'} |")
    if om is not None:
        out += [f"| {claim} | {m.label} | {claim_verdict(rec, om, m, change)} |"
                for claim, m, change in checkpoint_claims(rec, om, hi.k_samples)]
    return out


def mitigation_claims(merged_final, merged, high_final, mar_final) -> list[str]:
    ppl = Measure(PPL, "test PPL")
    return [f"| Merging two checkpoints lowers test PPL vs the final one | test PPL | "
            f"{claim_verdict(merged_final, merged, ppl, 'better') if merged else 'not run'} |",
            f"| MAR loss lowers test PPL vs plain CE at the same epoch | test PPL | "
            f"{claim_verdict(high_final, mar_final, ppl, 'better') if mar_final else 'not run'} |"]
