"""Report section: extraction (paper 2). Per checkpoint, members against the non-member floor
with intervals, the excess, the controls, the curve of the verbatim and any-category ratios,
the attention correlations as a heatmap (when the attention probe ran), and generations of
the last checkpoint beside their true suffixes with the matched spans highlighted."""

from __future__ import annotations

from finemem.report.sections import register_section
from finemem.report.sections._common import matched_pair

N_SHOWN = 6

TEMPLATE = """
<p>Members n={{ n_mem }}, non-members n={{ n_non }}; 95% intervals.{% if cut %} Each trained
text is cut into a prefix of P = {{ cut.prefix_tokens }} and a true suffix of
S = {{ cut.suffix_tokens }} tokens: "exact" counts the suffix reproduced.{% endif %} "excess" =
members minus non-members: only it says the model memorized these texts, not their
template.</p>
<table class="data"><thead><tr><th>checkpoint</th><th>epoch</th><th>exact {{ cut.suffix_tokens if cut else "S" }}-token suffix (members)</th>
  <th>verbatim (members)</th><th>verbatim (non-members)</th><th>excess verbatim</th>
  <th>any category (members)</th><th>excess any</th><th>ROUGE-L members</th></tr></thead><tbody>
{% for r in rows %}<tr><td><code>{{ r.name }}</code></td><td class="num">{{ r.epoch | num }}</td>
  <td>{{ r.exact | interval }}</td><td>{{ r.verb | interval }}</td>
  <td>{{ r.verb_non | interval }}</td><td>{{ r.excess | interval }}</td>
  <td>{{ r.any | interval }}</td><td>{{ r.excess_any | interval }}</td>
  <td>{{ r.rouge | interval }}</td></tr>{% endfor %}
</tbody></table>
{% if controls %}<p class="note">Controls at {{ last }}: the true suffix scores ROUGE-L
{{ controls.perfect | num }}, another member's suffix {{ controls.null | num }}.</p>{% endif %}
<img class="plot" alt="extraction ratios over training" src="{{ plot }}">
{% if heatmap %}<h3>Attention and memorization</h3>
<p class="note">Spearman's rho between each head's attention entropy and the example's
memorization ({{ with_ }}) at {{ last }}; positive = memorized examples attend more
uniformly.</p>
<img class="plot" alt="attention entropy correlation per layer and head" src="{{ heatmap }}">
{% endif %}
{% if pairs %}<h3>Generations of {{ last }} beside the true suffix (members)</h3>
{% for p in pairs %}{{ pair(p) }}{% endfor %}{% endif %}
"""


def terminal(run, console) -> bool:
    """The extraction table (members against the non-member floor) and the controls."""
    from finemem.report.extraction_table import print_extraction

    return print_extraction(run.run_dir, console, store=run.store)


@register_section("extraction", title="Extraction", order=40, template=TEMPLATE,
                  probes=("extraction",), terminal=terminal)
def extraction(run):
    from finemem.analysis.extraction import excess, extraction_rows

    rows = extraction_rows(run.run_dir)
    if not rows:
        return None
    table = [{"name": r.name, "epoch": r.epoch,
              "exact": r.get("members", "exact_greedy_extractable"),
              "verb": r.get("members", "memorization_ratio", category="verbatim"),
              "verb_non": r.get("nonmembers", "memorization_ratio", category="verbatim"),
              "excess": excess(r, "verbatim"),
              "any": r.get("members", "memorization_ratio", category="any"),
              "excess_any": excess(r, "any"), "rouge": r.get("members", "rouge_l")}
             for r in rows]
    last = rows[-1]
    perfect, null = last.get("control_perfect", "rouge_l"), last.get("control_null", "rouge_l")
    gens = run.example_values(last.name, "members/generation")
    refs = run.example_values(last.name, "members/true_suffix")
    pairs = [matched_pair("", gens[i], refs[i], mask=not run.show_secrets) for i in sorted(gens)[:N_SHOWN] if i in refs]
    heatmap, with_ = _heatmap(run, last.name)
    from finemem.report.extraction_table import audited_cut

    return {"n_mem": (table[0]["exact"] or {}).get("n"), "cut": audited_cut(run.run_dir),
            "n_non": (last.get("nonmembers", "exact_greedy_extractable") or {}).get("n"),
            "rows": table, "last": last.name, "plot": _curve(rows),
            "controls": {"perfect": perfect["value"], "null": null["value"]}
            if perfect and null else None, "pairs": pairs, "heatmap": heatmap, "with_": with_}


def _curve(rows) -> str:
    import matplotlib.pyplot as plt

    from finemem.analysis.extraction import excess
    from finemem.report.plots import figure_data_uri

    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = [r.epoch for r in rows]
    for label, get in (("verbatim, members", lambda r: r.get("members", "memorization_ratio",
                                                              category="verbatim")),
                       ("verbatim, non-members", lambda r: r.get("nonmembers",
                                                                 "memorization_ratio",
                                                                 category="verbatim")),
                       ("excess verbatim", lambda r: excess(r, "verbatim")),
                       ("exact, members", lambda r: r.get("members", "exact_greedy_extractable"))):
        ms = [get(r) for r in rows]
        pts = [(e, m) for e, m in zip(x, ms) if m is not None]
        if not pts:
            continue
        ax.plot([e for e, _ in pts], [m["value"] for _, m in pts], marker="o", label=label)
        ax.fill_between([e for e, _ in pts], [m["lo"] for _, m in pts],
                        [m["hi"] for _, m in pts], alpha=0.15)
    ax.set_xlabel("epoch")
    ax.set_ylabel("share of texts")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_data_uri(fig)


def _heatmap(run, checkpoint: str):
    rows = [m for m in run.metric_rows(split="members", name="spearman_rho")
            if m["checkpoint"] == checkpoint]
    ent = [(m["settings"], m["value"]) for m in rows if m["settings"].get("stat") == "entropy"]
    if not ent:
        return None, None
    import numpy as np
    import matplotlib.pyplot as plt

    from finemem.report.plots import figure_data_uri

    layers = max(s["layer"] for s, _ in ent) + 1
    heads = max(s["head"] for s, _ in ent) + 1
    grid = np.full((layers, heads), np.nan)
    for s, v in ent:
        grid[s["layer"], s["head"]] = v
    fig, ax = plt.subplots(figsize=(1 + 0.6 * heads, 1 + 0.5 * layers))
    im = ax.imshow(grid, cmap="coolwarm", vmin=-1, vmax=1)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    fig.colorbar(im, ax=ax, label="rho")
    fig.tight_layout()
    return figure_data_uri(fig), ent[0][0].get("with", "token_accuracy")
