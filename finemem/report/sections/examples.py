"""Report section: examples as the model sees them. The test examples' greedy answers at the
shipped checkpoint beside the reference completions, with the matched spans highlighted, and
the training examples the shipped checkpoint fits best (lowest per-example NLL, from the
`likelihood` probe) against the base. Every string is data and is escaped."""

from __future__ import annotations

from finemem.report.sections import register_section
from finemem.report.sections._common import BASE, matched_pair

N_SHOWN = 6

TEMPLATE = """
{% if pairs %}
<h3>Test prompts: greedy answer of <code>{{ ship }}</code> beside the reference</h3>
<p class="note">Highlighted: word spans the two share, in order.</p>
{% for p in pairs %}{{ pair(p) }}{% endfor %}
{% endif %}
{% if fits %}
<h3>Training examples <code>{{ ship }}</code> fits best</h3>
<table class="data examples"><thead><tr><th>id</th><th>prompt</th><th>completion</th>
  <th>NLL/token at {{ ship }}</th><th>at base</th></tr></thead><tbody>
{% for f in fits %}<tr><td><code>{{ f.id }}</code></td><td class="text">{{ f.prompt }}</td>
  <td class="text">{{ f.completion }}</td><td class="num">{{ f.nll | num }}</td>
  <td class="num">{{ f.base | num }}</td></tr>{% endfor %}
</tbody></table>
{% endif %}
"""


@register_section("examples", title="Examples", order=60, template=TEMPLATE)
def examples(run):
    if run.summary is None:
        return None
    ship = run.summary.recommendation.name
    pairs = []
    gens = run.generations(ship)
    if gens:
        test = run.examples("test")
        for eid in [i for i in test if i in gens][:N_SHOWN]:
            ex = test[eid]
            pairs.append(matched_pair(ex.prompt, gens[eid], ex.completion,
                                      mask=not run.show_secrets))
    fits = []
    nll = run.example_values(ship, "train/mean_nll")
    if nll:
        base = run.example_values(BASE, "train/mean_nll")
        train = run.examples("train")
        from finemem.data.secrets import mask_secrets

        show = (lambda t: t) if run.show_secrets else mask_secrets
        for eid in sorted(nll, key=nll.get)[:N_SHOWN]:
            ex = train.get(eid)
            if ex is not None:
                fits.append({"id": eid, "prompt": show(ex.prompt),
                             "completion": show(ex.completion), "nll": nll[eid],
                             "base": base.get(eid)})
    if not pairs and not fits:
        return None
    return {"ship": ship, "pairs": pairs, "fits": fits}
