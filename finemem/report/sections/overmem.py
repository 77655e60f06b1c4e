"""Report section of the `overmem` probe: the stage table (accuracy with its interval, test
PPL and its ratio to the running minimum, the stage and its reason) and the learning-dynamics
plot over the stage colours, plus the diversity panels."""

from __future__ import annotations

from finemem.report.sections import register_section

TEMPLATE = """
<p>Stage rule: underfit below {{ rule.underfit_frac }} x the best accuracy; over-memorized when
test PPL is at least {{ "%.2f" | format(1 + rule.tau) }}x its running minimum while accuracy stays
within {{ rule.delta }} of the best; overfit when accuracy falls too.
{% if not graded %}<b>The test set has no graded answers</b>: no accuracy and no stages; the
recommendation uses test PPL.{% endif %}</p>
<table class="data stages">
  <thead><tr><th>checkpoint</th><th>epoch</th>{% if graded %}<th>test acc &uarr; [95% CI]</th>{% endif %}
    <th>test PPL &darr;</th><th>x min</th>{% for h in extra_headers %}<th>{{ h }}</th>{% endfor %}
    <th>stage</th></tr></thead>
  <tbody>
  {% for r in rows %}
  <tr class="stage-{{ r.label | replace(' ', '-') }}{% if r.ship %} ship-row{% endif %}" title="{{ r.reason }}">
    <td><code>{{ r.name }}</code>{% if r.merged %} (merge){% endif %}{% if r.ship %} &larr; ship{% endif %}</td>
    <td class="num">{{ r.epoch | num(1) }}</td>
    {% if graded %}<td class="num">{{ r.acc | interval }}</td>{% endif %}
    <td class="num">{{ r.ppl | num }}</td><td class="num">{{ r.ratio | num(2) }}</td>
    {% for v in r.extra %}<td class="num">{{ v | num }}</td>{% endfor %}
    <td>{{ r.label }}</td>
  </tr>
  {% endfor %}
  </tbody>
</table>
<details><summary>why each stage</summary><ul>
{% for r in rows %}<li><code>{{ r.name }}</code>: {{ r.label }} &mdash; {{ r.reason }}</li>{% endfor %}
</ul></details>
<figure><img class="plot" data-plot="dynamics" alt="learning dynamics" src="{{ dynamics }}">
<figcaption>Test accuracy and test PPL of the reference completions (log scale, scaled to the
fine-tuned checkpoints; the base model at step 0 is the hollow marker) over the stage
colours.</figcaption></figure>
{% if diversity %}<figure><img class="plot" data-plot="diversity" alt="diversity of samples" src="{{ diversity }}"></figure>{% endif %}
"""


def terminal(run, console) -> bool:
    """The stage table and the recommendation; the plots written to RUN_DIR/report/."""
    from finemem.errors import UserError
    from finemem.report.plots import write_plots
    from finemem.report.tables import print_summary

    if not run.metric_rows(split="test", name="perplexity"):
        return False  # no likelihood results: no stage table
    if run.summary is None:
        raise UserError(run.summary_error or "no stage summary", source=str(run.run_dir))
    print_summary(run.summary, console)
    console.print(f"plots: {write_plots(run.summary, run.run_dir / 'report')}", highlight=False,
                  soft_wrap=True)
    return True


@register_section("overmem", title="Learning dynamics and stages", order=10,
                  template=TEMPLATE, probes=("likelihood", "overmem"), terminal=terminal)
def overmem(run):
    from finemem.report.plots import dynamics_figure, diversity_figure, figure_data_uri
    from finemem.report.tables import _columns

    s = run.summary
    if s is None:
        return None
    extra = _columns(s)
    rows = []
    for r, lab in zip(s.rows + s.merges, s.labels + s.merge_labels):
        rows.append({"name": r.name, "epoch": r.epoch, "merged": r.merged,
                     "ship": r.name == s.recommendation.name,
                     "acc": r.find("test/answer_accuracy"), "ppl": r.get("test/perplexity"),
                     "ratio": lab.ppl_ratio, "label": lab.label, "reason": lab.reason,
                     "extra": [r.get(key, **st) for _, key, st, _ in extra]})
    div = diversity_figure(s)
    return {"rule": s.rule, "graded": s.graded, "rows": rows,
            "extra_headers": [h for h, *_ in extra],
            "dynamics": figure_data_uri(dynamics_figure(s)),
            "diversity": figure_data_uri(div) if div is not None else None}
