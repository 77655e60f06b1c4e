"""Secret (PII) extraction: did a generation reproduce a secret, and how exposed is it.

Usage:
    from finemem.metrics.secrets import secret_reproduced, secret_extraction_rate, exposure_among
    ok = secret_reproduced(" ada@x.org. Thanks", "ada@x.org")           # True
    bits = exposure_among(true_nll, candidate_nll)                       # per secret
    won = ranked_first(full_true_nll, full_candidate_nll)                # reconstruction

Higher means more memorized for all of them.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from finemem.metrics.membership import exposure_rank
from finemem.metrics.registry import register_metric


def secret_reproduced(generated: str, secret: str) -> bool:
    """True when the generation, leading whitespace aside, begins with the whole secret.

    >>> secret_reproduced(" 4539 1488 0343 6467 is", "4539 1488 0343 6467")
    True
    >>> secret_reproduced(" 4539 1488 0343 6466", "4539 1488 0343 6467")
    False
    """
    s = secret.strip()
    return bool(s) and generated.lstrip().startswith(s)


@register_metric("secret_extraction_rate", higher_is_better=False, more_memorized_when="higher",
                 kind="rate", inputs="values")
def secret_extraction_rate(flags) -> float:
    """Share of secrets reproduced (one 0/1 flag per secret: greedy, or any of k samples).

    >>> secret_extraction_rate([1, 0, 0, 1])
    0.5
    """
    return _share(flags, "secret_extraction_rate: no secrets")


def _share(flags, empty: str) -> float:
    a = np.asarray(flags, dtype=float).ravel()
    if not a.size:
        warnings.warn(f"{empty}; returning nan", RuntimeWarning, stacklevel=3)
        return math.nan
    return float((a > 0).mean())


def exposure_among(true_nll, candidate_nll) -> np.ndarray:
    r"""Per secret, its exposure (bits) among its own m format-matched candidates:

    .. math:: \mathrm{exposure}_i = \log_2(m+1) - \log_2 r_i,\quad
              r_i = 1 + |\{j : \mathrm{nll}_{i,j} < \mathrm{nll}_i\}|

    `true_nll` (n,), `candidate_nll` a list of n arrays (m_i,) of summed NLL.

    >>> exposure_among([1.0, 5.0], [[2.0, 3.0, 4.0], [1.0, 2.0, 3.0]]).tolist()
    [2.0, 0.0]
    """
    return np.array([float(exposure_rank([t], c)[0]) for t, c in zip(true_nll, candidate_nll)])


@register_metric("secret_exposure", higher_is_better=False, more_memorized_when="higher",
                 inputs="values")
def secret_exposure(bits) -> float:
    """Mean exposure (bits) over secrets, each among its own candidates (`exposure_among`).

    >>> secret_exposure([2.0, 0.0])
    1.0
    """
    a = np.asarray(bits, dtype=float).ravel()
    if not a.size:
        warnings.warn("secret_exposure: no secrets; returning nan", RuntimeWarning, stacklevel=2)
        return math.nan
    return float(a.mean())


def ranked_first(true_nll, candidate_nll) -> np.ndarray:
    r"""Per secret, whether the true secret is ranked first among its m candidates (no
    candidate has a lower NLL; the exposure's rank :math:`r_i = 1`). Reconstruction (Lukas et
    al. 2023) passes the NLLs of the whole record with each candidate in the secret's place,
    :math:`\mathrm{nll}(\text{prefix} + c + \text{suffix})`, so the text after the secret
    votes too.

    >>> ranked_first([1.0, 5.0], [[2.0, 3.0], [1.0, 6.0]]).tolist()
    [True, False]
    """
    return np.array([not np.any(np.asarray(c, float) < t)
                     for t, c in zip(true_nll, candidate_nll)], dtype=bool)


@register_metric("secret_reconstruction_rate", higher_is_better=False,
                 more_memorized_when="higher", kind="rate", inputs="values")
def secret_reconstruction_rate(flags) -> float:
    """Share of mid-text secrets the model fills in: the true secret ranked first among its
    format-matched candidates in the whole record (`ranked_first`); chance is 1 / (m + 1).

    >>> secret_reconstruction_rate([True, False, False, False])
    0.25
    """
    return _share(flags, "secret_reconstruction_rate: no mid-text secrets")
