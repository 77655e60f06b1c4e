"""The `likelihood` probe: train and test perplexity and per-example NLL, for any task.

Per checkpoint: the pooled perplexity of a fixed sample of training examples (scored as they
were trained: completion only, or the whole text) and of the reference completions of each
chosen eval set, with bootstrap intervals; each example's mean NLL is stored per example for
later analyses (membership, trajectories). Works on graded and free-text tasks alike.
"""

from __future__ import annotations

from pydantic import Field

from finemem.audit import measures
from finemem.audit.probes import Probe, register_probe
from finemem.config import Section
from finemem.metrics.likelihood import mean_nll


class LikelihoodConfig(Section):
    train_sample: int = Field(200, gt=0, description="training examples scored for train PPL")
    splits: list[str] | str = Field(
        ["test"], description="eval sets whose reference completions are scored: names under "
                              "data.eval (or the task's own), or 'all'")


@register_probe("likelihood")
class Likelihood(Probe):
    Config = LikelihoodConfig
    description = "train / test perplexity and per-example NLL (every task)"

    def prepare(self, ctx) -> None:
        sets = ctx.eval_sets()
        names = list(sets) if self.cfg.splits == "all" else list(self.cfg.splits)
        missing = [n for n in names if n not in sets]
        if missing:
            from finemem.errors import UserError

            raise UserError(f"no eval set named {', '.join(missing)}; eval sets: "
                            f"{', '.join(sets)}", field="audit.likelihood.splits")
        self.parts = [("train", ctx.train_sample(self.cfg.train_sample), ctx.cfg.data.loss_on)]
        self.parts += [(n, sets[n].examples, "completion") for n in names]
        self.inputs = [[split, loss_on, [[e.id, e.prompt, e.completion] for e in exs]]
                       for split, exs, loss_on in self.parts]

    def requests(self, ctx, ref) -> list:
        return [ctx.score_request(examples, loss_on=loss_on)
                for _, examples, loss_on in self.parts]

    def run(self, ctx, ref, model) -> None:
        for split, examples, loss_on in self.parts:
            ctx.phase(f"{split} PPL")
            scores = ctx.score(ref, model, examples, loss_on=loss_on)
            lps = [s.logprob for s in scores]
            st = measures.perplexity_stat(lps)
            ctx.put(ref, split, "perplexity", st.value, n=st.n, lo=st.lo, hi=st.hi)
            keep = [(e.id, lp) for e, lp in zip(examples, lps) if len(lp)]
            ctx.put_examples(ref, split, "mean_nll", [i for i, _ in keep],
                             mean_nll([lp for _, lp in keep], per_example=True))
