"""Report section of the `relaxed` probe: the threshold curve (members' and non-members'
relaxed-memorization rate, and the excess of members over non-members, at each MiniLM-cosine
threshold, with 95% intervals) at the last audited checkpoint, and the headline threshold
across checkpoints."""

from __future__ import annotations

from pathlib import Path

from finemem.report.sections import register_section
from finemem.report.sections._common import Grid, ci, last_with

TEMPLATE = """
<p>A generation counts as memorized when its MiniLM cosine to the true suffix reaches the
threshold; non-members are the floor a model reaches without having seen the text.</p>
{{ grid(curve) }}
{{ grid(headline) }}
{% if plot %}<figure><img class="plot" data-plot="relaxed" alt="relaxed memorization against threshold" src="{{ plot }}"></figure>{% endif %}
"""


def _cells(run, ck: str) -> dict:
    out = {}
    for split in ("members", "nonmembers"):
        for r in run.metric_rows(split=split, name="relaxed_memorization_rate", checkpoint=ck):
            out[(split, r["settings"]["threshold"])] = r
    for r in run.metric_rows(split="excess", name="excess_over_nonmembers", checkpoint=ck):
        if r["settings"].get("outcome") == "relaxed":
            out[("excess", r["settings"]["threshold"])] = r
    return out


def relaxed_grids(run) -> tuple[Grid, Grid, str, dict] | None:
    ck = last_with(run, split="members", name="relaxed_memorization_rate")
    if ck is None:
        return None
    cells = _cells(run, ck)
    thresholds = sorted({t for _, t in cells})
    headers = ["threshold", "members [95% CI]", "non-members", "excess"]
    curve = Grid(f"Relaxed memorization against threshold at {ck}", headers,
                 [[f"{t:g}", ci(cells.get(("members", t))), ci(cells.get(("nonmembers", t))),
                   ci(cells.get(("excess", t)))] for t in thresholds])
    t0 = run.config.audit.section("relaxed").threshold if run.config is not None else None
    rows = []
    for c in run.checkpoint_order():
        cc = _cells(run, c)
        if t0 is not None and ("members", t0) in cc:
            rows.append([c, ci(cc.get(("members", t0))), ci(cc.get(("nonmembers", t0))),
                         ci(cc.get(("excess", t0)))])
    headline = Grid(f"At the headline threshold {t0:g} per checkpoint" if t0 is not None
                    else "At the headline threshold", ["checkpoint"] + headers[1:], rows)
    return curve, headline, ck, cells


def _plot(cells: dict):
    import matplotlib.pyplot as plt

    from finemem.report.plots import figure_data_uri

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for split, label in (("members", "members"), ("nonmembers", "non-members")):
        ts = sorted(t for s, t in cells if s == split)
        ax.plot(ts, [cells[(split, t)]["value"] for t in ts], marker="o", label=label)
    ax.set(xlabel="cosine threshold", ylabel="relaxed memorization rate", ylim=(0, 1))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_data_uri(fig)


def terminal(run, console) -> bool:
    from finemem.report.tables import print_grid

    got = relaxed_grids(run)
    if got is None:
        return False
    curve, headline, _, _ = got
    line = relaxed_summary(run.run_dir)
    if line:
        console.print(line, highlight=False)
    print_grid(curve, console)
    print_grid(headline, console)
    return True


@register_section("relaxed", title="Relaxed memorization", order=42, template=TEMPLATE,
                  probes=("relaxed",), terminal=terminal)
def relaxed(run):
    got = relaxed_grids(run)
    if got is None:
        return None
    curve, headline, _, cells = got
    return {"curve": curve, "headline": headline, "plot": _plot(cells)}


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
            def band(x, sign=""):
                return f"{x['value']:{sign}.2f} [{x['lo']:{sign}.2f}, {x['hi']:{sign}.2f}]"
            return (f"Relaxed memorization (MiniLM cosine >= {t:g}) at {r.name}: members "
                    f"{band(m)}, non-members {band(n)}, excess {band(e, '+')}; the curve over "
                    "thresholds: `finemem compare` or the store (relaxed_memorization_rate).")
    return None
