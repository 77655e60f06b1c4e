"""Report section: every per-checkpoint metric in the store, whatever probe wrote it, with its
sample size and interval. A probe that has no section of its own yet shows up here."""

from __future__ import annotations

from finemem.report.sections import register_section
from finemem.report.sections._common import settings_text

TEMPLATE = """
<p>Every stored metric: value [95% interval] n = sample size. Arrows: the metric registry's
direction of quality; "mem" says which direction means more memorized.</p>
{% for split in splits %}
<h3>{{ split.name }}</h3>
<div class="scroll"><table class="data metrics">
  <thead><tr><th>metric</th>{% for c in checkpoints %}<th><code>{{ c }}</code></th>{% endfor %}</tr></thead>
  <tbody>{% for m in split.metrics %}
  <tr><td title="{{ m.doc }}">{{ m.name }} {{ m.arrow }}{% if m.settings %} <small>({{ m.settings }})</small>{% endif %}{% if m.mem %} <small>mem {{ m.mem }}</small>{% endif %}</td>
    {% for cell in m.cells %}<td class="num">{{ cell | interval }}</td>{% endfor %}</tr>
  {% endfor %}</tbody>
</table></div>
{% endfor %}
"""


@register_section("metrics", title="All stored metrics", order=90, template=TEMPLATE)
def all_metrics(run):
    from finemem.metrics.registry import METRICS

    rows = run.metric_rows()
    if not rows:
        return None
    checkpoints = run.checkpoint_order()
    table: dict[str, dict[tuple, dict]] = {}
    for r in rows:
        key = (r["name"], settings_text(r["settings"]))
        table.setdefault(r["split"], {}).setdefault(key, {})[r["checkpoint"]] = r
    splits = []
    for split in sorted(table, key=lambda s: (s != "train", s != "test", s)):
        metrics = []
        for (name, st), cells in sorted(table[split].items()):
            info = METRICS.get(name)
            metrics.append({"name": name, "settings": st,
                            "arrow": ("\u2191" if info.higher_is_better else "\u2193")
                            if info else "",
                            "mem": info.more_memorized_when if info else None,
                            "doc": info.doc if info else "",
                            "cells": [cells.get(c) for c in checkpoints]})
        splits.append({"name": split, "metrics": metrics})
    return {"checkpoints": checkpoints, "splits": splits}
