"""Report section for several runs (`finemem report RUN_A RUN_B ...`): one row per run and the
test accuracy / test PPL curves of every run on shared axes."""

from __future__ import annotations

import math

from finemem.report.sections import register_section

TEMPLATE = """
<table class="data compare"><thead><tr><th>run</th><th>method</th><th>lr</th>
  <th>best test acc</th><th>min test PPL</th><th>over-memorized from</th><th>ship</th></tr></thead>
<tbody>{% for r in rows %}<tr><td><a href="#run-{{ loop.index }}">{{ r.name }}</a></td>
  <td>{{ r.method }}</td><td class="num">{{ r.lr }}</td><td class="num">{{ r.best_acc | num }}</td>
  <td class="num">{{ r.min_ppl | num }}</td><td>{{ r.onset or "-" }}</td>
  <td><code>{{ r.ship or "-" }}</code></td></tr>{% endfor %}</tbody></table>
{% if plot %}<figure><img class="plot" data-plot="compare" alt="runs compared" src="{{ plot }}"></figure>{% endif %}
"""


@register_section("compare", title="Runs compared", order=0, template=TEMPLATE,
                  scope="compare")
def compare(runs):
    import matplotlib.pyplot as plt

    from finemem.report.plots import figure_data_uri

    rows = []
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    drawn = False
    for run in runs:
        s, cfg = run.summary, run.config
        row = {"name": run.name, "method": cfg.training.method if cfg else "-",
               "lr": f"{cfg.training.lr:g}" if cfg else "-", "best_acc": None, "min_ppl": None,
               "onset": None, "ship": None}
        if s is not None:
            acc = [v for v in s.column("test/answer_accuracy") if not math.isnan(v)]
            ppl = [v for v in s.column("test/perplexity") if not math.isnan(v)]
            onset = s.first("over-memorized")
            row.update(best_acc=max(acc) if acc else None, min_ppl=min(ppl) if ppl else None,
                       onset=onset.name if onset else None, ship=s.recommendation.name)
            tuned = [r for r in s.rows if r.step > 0]
            if s.graded:
                a1.plot([r.epoch for r in s.rows], s.column("test/answer_accuracy"), "o-",
                        label=run.name)
            a2.plot([r.epoch for r in tuned], [r.get("test/perplexity") for r in tuned], "s--",
                    label=run.name)
            drawn = True
        rows.append(row)
    a1.set(title="test accuracy", xlabel="epoch", ylim=(-0.02, 1.02))
    a2.set(title="test PPL (fine-tuned checkpoints)", xlabel="epoch", yscale="log")
    for ax in (a1, a2):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    plot = figure_data_uri(fig)
    return {"rows": rows, "plot": plot if drawn else None}
