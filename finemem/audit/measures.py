"""Glue between engine outputs and `finemem.metrics`: each function returns numbers with their
sample size and 95% interval, ready for the results store. No model calls here."""

from __future__ import annotations

import math

import numpy as np

from finemem.config import AuditConfig
from finemem.metrics.answers import answers_match, extract_answer
from finemem.metrics.calibration import expected_calibration_error
from finemem.metrics.diversity import (distinct_answers, distinct_fraction, distinct_n,
                                       embed_texts, embedding_dispersion, pass_at_k, self_bleu)
from finemem.metrics.stats import Rate, bootstrap_ci


def pooled_ppl(logprobs: list[np.ndarray]) -> tuple[float, float, float]:
    """Per-token perplexity pooled over examples, exp(sum NLL / sum tokens), with a bootstrap
    interval over examples."""
    nll = np.array([-float(np.sum(lp)) for lp in logprobs])
    ntok = np.array([len(lp) for lp in logprobs], dtype=float)

    def stat(idx: np.ndarray) -> float:
        idx = idx.astype(int)
        return math.exp(nll[idx].sum() / max(ntok[idx].sum(), 1.0))

    idx = np.arange(len(nll), dtype=float)
    lo, hi = bootstrap_ci(idx, stat, n_boot=500)
    return stat(idx), lo, hi


def answers(texts: list[str], acfg: AuditConfig) -> list[str | None]:
    return [extract_answer(t, method=acfg.answer_extractor, pattern=acfg.answer_regex)
            for t in texts]


def grade(texts: list[str], refs: list[str], *, method: str, pattern: str | None) -> np.ndarray:
    return np.array([answers_match(extract_answer(t, method=method, pattern=pattern), r)
                     for t, r in zip(texts, refs)], dtype=bool)


def rate(flags: np.ndarray) -> Rate:
    return Rate.from_counts(int(np.sum(flags)), len(flags))


def mean_ci(values: np.ndarray) -> tuple[float, float]:
    return bootstrap_ci(np.asarray(values, dtype=float), n_boot=500)


def diversity(samples: list[list[str]], refs: list[str], acfg: AuditConfig, *,
              greedy_answers: list[str | None], greedy_correct: np.ndarray
              ) -> dict[str, tuple[float, int, float, float]]:
    """Diversity and calibration from k samples per prompt.

    Returns metric -> (mean over prompts, n prompts, lo, hi). Calibration: the confidence of the
    greedy answer is the share of the k samples that reach the same answer (self-consistency);
    ECE compares it with whether the greedy answer is right.
    """
    k = acfg.k_samples
    per: dict[str, list[float]] = {f"pass@{k}": [], "pass@1": [], f"distinct@{k}": [],
                                   f"distinct_openings@{k}": [],
                                   "distinct_correct_answers": [], "distinct_2": [],
                                   "self_bleu": [], "embedding_dispersion": []}
    conf = []
    embed = acfg.embedding_dispersion
    for texts, ref, g_ans in zip(samples, refs, greedy_answers):
        ans = answers(texts, acfg)
        ok = [answers_match(a, ref) for a in ans]
        c = int(sum(ok))
        per[f"pass@{k}"].append(pass_at_k(len(texts), c, k))
        per["pass@1"].append(pass_at_k(len(texts), c, 1))
        per[f"distinct@{k}"].append(distinct_fraction(texts))
        per[f"distinct_openings@{k}"].append(distinct_fraction(texts, first_line=True))
        per["distinct_correct_answers"].append(
            distinct_answers([a for a, o in zip(ans, ok) if o]))
        per["distinct_2"].append(distinct_n(texts, n=2))
        per["self_bleu"].append(self_bleu(texts))
        if embed:
            per["embedding_dispersion"].append(embedding_dispersion(embed_texts(texts)))
        conf.append(float(np.mean([answers_match(a, g_ans) for a in ans])) if g_ans else 0.0)
    out = {}
    for name, vals in per.items():
        v = np.array([x for x in vals if not math.isnan(x)], dtype=float)
        if v.size:
            lo, hi = mean_ci(v)
            out[name] = (float(v.mean()), int(v.size), lo, hi)
    if conf:
        ece = expected_calibration_error(np.array(conf), greedy_correct.astype(float))
        out["ece"] = (ece, len(conf), math.nan, math.nan)
    return out
