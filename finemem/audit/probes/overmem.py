"""The `overmem` probe: paper 1's over-memorization audit.

Per checkpoint, on top of the `likelihood` probe's test PPL:
- greedy accuracy on every graded eval set (test, OOD, the robustness variants of test), with
  Wilson intervals, and each variant's accuracy drop from the clean test accuracy;
- first-token entropy on the test prompts;
- k samples per test prompt: distinct fraction (whole text and first lines), distinct 2-grams,
  self-BLEU, MiniLM embedding dispersion, and, with answers, pass@k, pass@1, distinct correct
  answers and calibration (ECE).
An ungraded test set (free text) still gets entropy and diversity; the summary then falls
back to test PPL (see `finemem.audit.summary`). Stage-rule thresholds live here too.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from finemem.analysis.stages import StageRule
from finemem.audit import measures
from finemem.audit.probes import Probe, register_probe
from finemem.config import Section
from finemem.metrics.answers import METHODS

_RULE = StageRule()


class OvermemConfig(Section):
    answer_extractor: Literal[("auto",) + METHODS] = Field(
        "auto", description="how a generation is graded: auto = the task's own (builtin) or "
                            "inferred from the references (your data; see docs)")
    answer_regex: str | None = Field(None, description="pattern for answer_extractor: regex")
    max_new_tokens: int = Field(96, gt=0, description="longest generation")
    diversity_prompts: int = Field(64, ge=0, description="test prompts sampled for diversity")
    k_samples: int = Field(8, gt=1, description="samples per prompt for pass@k and diversity")
    temperature: float = Field(1.0, gt=0, description="sampling temperature for the diversity "
                                                      "samples")
    top_p: float = Field(1.0, gt=0, le=1.0, description="nucleus sampling cut-off")
    embedding_dispersion: bool = Field(True, description="MiniLM dispersion of samples")
    underfit_frac: float = Field(_RULE.underfit_frac, gt=0, le=1,
                                 description="underfit below this share of the best accuracy")
    delta: float = Field(_RULE.delta, ge=0, le=1, description="accuracy tolerance below the best")
    tau: float = Field(_RULE.tau, gt=0, description="PPL rise over its running minimum")
    min_consecutive: int = Field(_RULE.min_consecutive, ge=1,
                                 description="shorter runs of risen PPL count as noise")

    @model_validator(mode="after")
    def _regex(self) -> "OvermemConfig":
        if self.answer_extractor == "regex" and not self.answer_regex:
            raise ValueError("answer_extractor 'regex' needs answer_regex (a pattern with one "
                             "group)")
        return self


@register_probe("overmem")
class Overmem(Probe):
    Config = OvermemConfig
    needs = ("likelihood",)
    description = "accuracy, robustness, entropy, diversity and calibration (paper 1)"

    def prepare(self, ctx) -> None:
        c = self.cfg
        self.sets = ctx.eval_sets(c.answer_extractor, c.answer_regex)
        self.test = self.sets["test"]
        self.inputs = [[n, s.extractor, [[e.id, e.prompt, e.answer] for e in s.examples]]
                       for n, s in sorted(self.sets.items())]

    def _gen(self, ctx, ref, model, examples, **kw):
        c = self.cfg
        return ctx.generate(ref, model, examples, max_new_tokens=c.max_new_tokens,
                            temperature=c.temperature, top_p=c.top_p, **kw)

    def _greedy(self, ctx, ref, model) -> dict[str, list]:
        """Greedy generations of every graded set, in one engine call when the sets' example
        ids do not clash (full batches, one length sort), else one call per set."""
        graded = {n: es for n, es in self.sets.items() if es.graded}
        if not graded:
            return {}
        ctx.phase(f"greedy answers ({', '.join(graded)})")
        unique: dict[str, object] = {}
        for es in graded.values():
            for e in es.examples:
                if unique.setdefault(e.id, e).prompt != e.prompt:
                    return {n: self._gen(ctx, ref, model, es.examples) for n, es in graded.items()}
        gens = dict(zip(unique, self._gen(ctx, ref, model, list(unique.values()))))
        return {n: [gens[e.id] for e in es.examples] for n, es in graded.items()}

    def run(self, ctx, ref, model) -> None:
        c = self.cfg
        correct: dict[str, np.ndarray] = {}
        greedy_answers = None
        for name, gens in self._greedy(ctx, ref, model).items():
            es = self.sets[name]
            texts = [g[0].text for g in gens]
            correct[name] = measures.grade(texts, [e.answer for e in es.examples],
                                           extractor=es.extractor, pattern=es.answer_regex)
            st = measures.rate_stat(correct[name])
            ctx.put(ref, name, "answer_accuracy", st.value, n=st.n, lo=st.lo, hi=st.hi)
            if name == "test":
                ent = [g[0].first_token_entropy for g in gens]
                greedy_answers = measures.answers(texts, es.extractor, es.answer_regex)
        if "test" not in correct:  # free text: the entropy of the first target token
            scores = ctx.score(ref, model, self.test.examples)
            ent = [s.entropy[0] for s in scores if len(s)]
        st = measures.mean_stat(ent, measures.first_token_entropy)
        ctx.put(ref, "test", "first_token_entropy", st.value, n=st.n, lo=st.lo, hi=st.hi)
        for name, es in self.sets.items():
            if es.role == "variant" and name in correct and "test" in correct:
                drop = measures.accuracy_drop(correct["test"], correct[name])
                ctx.put(ref, name, "accuracy_drop", drop, n=len(correct[name]))
        if c.diversity_prompts:
            self._diversity(ctx, ref, model, correct.get("test"), greedy_answers)

    def _diversity(self, ctx, ref, model, clean, greedy_answers) -> None:
        c = self.cfg
        exs = self.test.examples[: c.diversity_prompts]
        ctx.phase(f"diversity ({c.k_samples} samples x {len(exs)} prompts)")
        samples = self._gen(ctx, ref, model, exs, n=c.k_samples, do_sample=True)
        graded = clean is not None
        out = measures.diversity(
            [[g.text for g in row] for row in samples], k=c.k_samples,
            embed=c.embedding_dispersion,
            refs=[e.answer for e in exs] if graded else None,
            extractor=self.test.extractor if graded else None, pattern=self.test.answer_regex,
            greedy_answers=greedy_answers[: len(exs)] if graded else None,
            greedy_correct=clean[: len(exs)] if graded else None)
        for name, settings, st in out:
            ctx.put(ref, "test", name, st.value, n=st.n, lo=st.lo, hi=st.hi, settings=settings)
