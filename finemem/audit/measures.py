"""Glue between engine outputs and `finemem.metrics`: each function returns numbers with their
sample size and 95% interval, ready for the results store. No model calls and no formulas
here: the formulas live in `finemem.metrics`, once.

A measure is `(registry name, settings) -> Stat`; settings (k, first_line, ...) go to the store
beside the value, never into the name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from finemem.metrics.answers import accuracy_drop, answers_match, extract_answer
from finemem.metrics.calibration import expected_calibration_error
from finemem.metrics.diversity import (distinct_answers, distinct_fraction, distinct_n,
                                       embed_texts, embedding_dispersion, first_token_entropy,
                                       pass_at_k, self_bleu)
from finemem.metrics.likelihood import pooled_perplexity, sum_nll
from finemem.metrics.stats import Rate, bootstrap_ci


@dataclass(frozen=True)
class Stat:
    value: float
    n: int
    lo: float | None = None
    hi: float | None = None


def perplexity_stat(logprobs: list[np.ndarray]) -> Stat:
    """Pooled per-token perplexity with a bootstrap interval over examples."""
    nll = sum_nll(logprobs, per_example=True)                  # (n,)
    ntok = np.array([len(lp) for lp in logprobs if len(lp)], dtype=float)

    def stat(idx: np.ndarray) -> float:
        idx = idx.astype(int)
        return pooled_perplexity(nll[idx], ntok[idx])

    idx = np.arange(len(nll), dtype=float)
    lo, hi = bootstrap_ci(idx, stat, n_boot=500)
    return Stat(stat(idx), len(nll), lo, hi)


def mean_stat(values, fn=np.mean) -> Stat:
    """A per-example mean (through `fn`, a registered metric) with its bootstrap interval."""
    v = np.asarray(values, dtype=float)
    lo, hi = bootstrap_ci(v, fn, n_boot=500)
    return Stat(float(fn(v)), int(v.size), lo, hi)


def rate_stat(flags: np.ndarray) -> Stat:
    r = Rate.from_counts(int(np.sum(flags)), len(flags))
    return Stat(r.value, r.n, r.lo, r.hi)


def answers(texts: list[str], extractor: str, pattern: str | None) -> list[str | None]:
    return [extract_answer(t, method=extractor, pattern=pattern) for t in texts]


def grade(texts: list[str], refs: list[str], *, extractor: str,
          pattern: str | None) -> np.ndarray:
    return np.array([answers_match(a, r) for a, r in
                     zip(answers(texts, extractor, pattern), refs)], dtype=bool)


def diversity(samples: list[list[str]], *, k: int, embed: bool,
              refs: list[str] | None = None, extractor: str | None = None,
              pattern: str | None = None, greedy_answers: list | None = None,
              greedy_correct: np.ndarray | None = None) -> list[tuple[str, dict, Stat]]:
    """Diversity of k samples per prompt, and, when the prompts have reference answers,
    pass@k and calibration.

    Returns (registry name, settings, Stat) triples; each is a mean over prompts with its
    bootstrap interval. Calibration: the confidence of the greedy answer is the share of the
    k samples that reach the same answer (self-consistency); ECE compares it with whether the
    greedy answer is right.
    """
    graded = refs is not None and extractor is not None
    per: dict[tuple[str, tuple], list[float]] = {}

    def add(name: str, value: float, **settings) -> None:
        per.setdefault((name, tuple(sorted(settings.items()))), []).append(value)

    conf = []
    for i, texts in enumerate(samples):
        add("distinct_fraction", distinct_fraction(texts), k=k, first_line=False)
        add("distinct_fraction", distinct_fraction(texts, first_line=True), k=k, first_line=True)
        add("distinct_n", distinct_n(texts, n=2), k=k, n=2)
        add("self_bleu", self_bleu(texts), k=k)
        if embed:
            add("embedding_dispersion", embedding_dispersion(embed_texts(texts)), k=k)
        if graded:
            ans = answers(texts, extractor, pattern)
            ok = [answers_match(a, refs[i]) for a in ans]
            c = int(sum(ok))
            add("mean_pass_at_k", pass_at_k(len(texts), c, k), k=k)
            add("mean_pass_at_k", pass_at_k(len(texts), c, 1), k=1)
            add("distinct_answers", distinct_answers([a for a, o in zip(ans, ok) if o]), k=k)
            g = greedy_answers[i]
            conf.append(float(np.mean([answers_match(a, g) for a in ans])) if g else 0.0)
    out = []
    for (name, settings), vals in per.items():
        v = np.array([x for x in vals if not math.isnan(x)], dtype=float)
        if v.size:
            out.append((name, dict(settings), mean_stat(v)))
    if conf:
        ece = expected_calibration_error(np.array(conf), greedy_correct.astype(float))
        out.append(("expected_calibration_error", {"k": k}, Stat(ece, len(conf))))
    return out


__all__ = ["Stat", "accuracy_drop", "answers", "diversity", "first_token_entropy", "grade", "mean_stat",
           "perplexity_stat", "rate_stat"]
