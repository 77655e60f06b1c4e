"""The `relaxed` probe (paper 3): memorization by meaning, not only word for word. A generation
counts as memorized when the MiniLM cosine of it and the true suffix reaches a threshold.

    finemem audit RUN_DIR --probes relaxed          # pulls in `extraction` first
    finemem audit RUN_DIR --probes relaxed --set audit.relaxed.threshold=0.9

It reads the extraction probe's per-example `embedding_cosine` from the store (members and
non-members of the same checkpoint): nothing is generated or embedded twice. Stored per
checkpoint, split `members` / `nonmembers`: `relaxed_memorization_rate` with settings
{"threshold": t} and a Wilson interval, for the configured threshold and every threshold of
the curve (default 0.50, 0.55, ..., 1.00: the paper's threshold is not known); split `excess`:
`excess_over_nonmembers` with {"outcome": "relaxed", "threshold": t} and a bootstrap interval.
The strict numbers (exact extraction, the verbatim ratio) are the extraction probe's, beside.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, field_validator

from finemem.audit import measures
from finemem.audit.probes import Probe, register_probe
from finemem.config import Section
from finemem.errors import UserError
from finemem.metrics.extraction import bootstrap_diff_ci, excess_over_nonmembers
from finemem.metrics.relaxed import DEFAULT_THRESHOLDS, relaxed_flags

SETS = ("members", "nonmembers")


class RelaxedConfig(Section):
    threshold: float = Field(0.8, ge=0.0, le=1.0, description="cosine at or above which a "
                             "generation counts as memorized (the headline number)")
    thresholds: list[float] = Field(list(DEFAULT_THRESHOLDS), min_length=1,
                                    description="the curve's thresholds, each in [0, 1]")

    @field_validator("thresholds")
    @classmethod
    def _in_range(cls, v: list[float]) -> list[float]:
        bad = [t for t in v if not 0.0 <= t <= 1.0]
        if bad:
            raise ValueError(f"every threshold lies in [0, 1]; got {bad[0]}")
        return sorted(set(v))

    def all_thresholds(self) -> list[float]:
        return sorted(set(self.thresholds) | {self.threshold})


@register_probe("relaxed")
class Relaxed(Probe):
    Config = RelaxedConfig
    default = False
    needs = ("extraction",)
    description = ("relaxed (embedding-similarity) memorization of members vs non-members at a "
                   "threshold and over a threshold curve, from the extraction probe's cosines")

    def prepare(self, ctx) -> None:
        # The cosines depend on the extraction settings: they are part of the done-key.
        self.inputs = [ctx.cfg.audit.section("extraction").model_dump(mode="json")]

    def run(self, ctx, ref, model) -> None:
        per = {}
        for split in SETS:
            cos = {i: float(v) for i, v in ctx.get_examples(ref, split, "embedding_cosine").items()}
            if not cos:
                raise UserError(f"no extraction cosines stored for {ref.name} ({split}); run "
                                "`finemem audit RUN_DIR --probes extraction,relaxed`",
                                field="probes")
            per[split] = np.array([cos[i] for i in sorted(cos)])
        n = int(per["members"].size + per["nonmembers"].size)
        for t in self.cfg.all_thresholds():
            flags = {s: relaxed_flags(per[s], threshold=t) for s in SETS}
            for s in SETS:
                st = measures.rate_stat(flags[s])
                ctx.put(ref, s, "relaxed_memorization_rate", st.value, n=st.n, lo=st.lo,
                        hi=st.hi, settings={"threshold": t})
            m, nm = flags["members"].astype(float), flags["nonmembers"].astype(float)
            lo, hi = bootstrap_diff_ci(m, nm)
            ctx.put(ref, "excess", "excess_over_nonmembers", excess_over_nonmembers(m, nm),
                    n=n, lo=lo, hi=hi, settings={"outcome": "relaxed", "threshold": t})
