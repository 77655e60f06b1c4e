"""Attention statistics as stored numbers (the engine reduces the maps: `finemem.engine.
attention`), and their rank correlation with per-example memorization.

Usage:
    attention_entropy(per_example_entropies)        # mean normalised entropy
    spearman_rho(attention_values, memorization_scores)
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from finemem.metrics.extraction import rank_spearman
from finemem.metrics.registry import register_metric

# The statistics the engine reduces per layer and head, in the order of its arrays' last axis.
STATS = ("entropy", "max_weight", "prompt_mass")


def _mean(name: str, values) -> float:
    v = np.asarray(values, dtype=float)
    if not v.size:
        warnings.warn(f"{name}: no examples; returning nan", RuntimeWarning, stacklevel=3)
        return math.nan
    return float(v.mean())


@register_metric("attention_entropy", higher_is_better=False, more_memorized_when=None,
                 inputs="values")
def attention_entropy(values) -> float:
    """Mean over examples of the normalised attention entropy
    H = -sum_k a_k log a_k / log(#keys) of a head (1 = uniform over the context)."""
    return _mean("attention_entropy", values)


@register_metric("attention_max_weight", higher_is_better=False, more_memorized_when=None,
                 inputs="values")
def attention_max_weight(values) -> float:
    """Mean over examples of a head's largest attention weight max_k a_k."""
    return _mean("attention_max_weight", values)


@register_metric("attention_prompt_mass", higher_is_better=False, more_memorized_when=None,
                 inputs="values")
def attention_prompt_mass(values) -> float:
    """Mean over examples of a head's attention mass on the prompt sum_{k in prompt} a_k."""
    return _mean("attention_prompt_mass", values)


@register_metric("spearman_rho", higher_is_better=True, more_memorized_when=None,
                 inputs="value_pairs")
def spearman_rho(x, y) -> float:
    """Spearman's rank correlation of two aligned per-example arrays (Pearson correlation of
    their ranks, ties averaged); nan when undefined (constant input or n < 3)."""
    if not len(x):
        warnings.warn("spearman_rho: no examples; returning nan", RuntimeWarning, stacklevel=2)
        return math.nan
    return rank_spearman(x, y)
