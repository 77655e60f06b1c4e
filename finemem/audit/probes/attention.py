"""The `attention` probe (paper 2): attention statistics of the probed training texts, and
their relation to how well each text is memorized.

Per checkpoint, on the extraction probe's members (prefix -> true suffix, as trained): the
engine's in-pass reduction gives, per layer and head, each example's normalised attention
entropy, largest weight and mass on the prompt, averaged over the suffix positions. Stored:
the per-example arrays, the mean of each statistic per layer and head, and Spearman's rho
between each statistic and the example's memorization (the extraction probe's token accuracy
on the suffix: the share of suffix tokens greedy decoding reproduces) with a bootstrap
interval. The paper says memorized examples go with more uniform attention (rho > 0 for
entropy); the probe reports the sign it measures, whatever it is.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from finemem.audit import measures
from finemem.audit.probes import Probe, get_probe, register_probe
from finemem.config import Section
from finemem.metrics.attention import STATS
from finemem.metrics.extraction import spearman_ci

METRIC = {"entropy": "attention_entropy", "max_weight": "attention_max_weight",
          "prompt_mass": "attention_prompt_mass"}


class AttentionConfig(Section):
    memorization: str = Field("token_accuracy", description="the extraction probe's per-example "
                              "score correlated with attention (token_accuracy, rouge_l, bleu, "
                              "embedding_cosine, leading_match_length)")
    bootstrap: int = Field(1000, gt=0, description="resamples of the rho interval")


@register_probe("attention")
class Attention(Probe):
    Config = AttentionConfig
    default = False
    needs = ("extraction",)
    description = ("attention entropy / max weight / prompt mass per layer and head on the "
                   "probed members, and their Spearman correlation with memorization")

    def prepare(self, ctx) -> None:
        ext = get_probe("extraction")(ctx.cfg.audit.section("extraction"))
        ext.prepare(ctx)  # the same members, prefixes and suffixes
        self.items = ext.items["members"]
        self.setting = ext.pair_setting()
        self.inputs = [[i.id, i.prefix, i.suffix] for i in self.items]

    def run(self, ctx, ref, model) -> None:
        ctx.phase("attention statistics")
        ids = [i.id for i in self.items]
        stats = ctx.attention(ref, model, ids, [(i.prefix, i.suffix) for i in self.items],
                              prompt_lens=[len(i.prefix) for i in self.items],
                              setting=self.setting)
        arr = np.stack(stats)  # (n, layers, heads, 3)
        ctx.put_values(ref, "members", "attention", ids, [a.round(6).tolist() for a in stats])
        mem = ctx.get_examples(ref, "members", self.cfg.memorization)
        y = np.array([mem.get(i, np.nan) for i in ids], dtype=float)
        ok = ~np.isnan(y)
        n_layers, n_heads = arr.shape[1:3]
        for s, stat in enumerate(STATS):
            for layer in range(n_layers):
                for head in range(n_heads):
                    where = {"layer": layer, "head": head}
                    x = arr[:, layer, head, s]
                    st = measures.mean_stat(x)
                    ctx.put(ref, "members", METRIC[stat], st.value, n=st.n, lo=st.lo, hi=st.hi,
                            settings=where)
                    rho, lo, hi = spearman_ci(x[ok], y[ok], n_boot=self.cfg.bootstrap)
                    ctx.put(ref, "members", "spearman_rho", rho, n=int(ok.sum()), lo=lo, hi=hi,
                            settings={"stat": stat, "with": self.cfg.memorization, **where})
