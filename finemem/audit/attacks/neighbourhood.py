"""The neighbourhood attack (Mattern et al. 2023, "Membership Inference Attacks against
Language Models via Neighbourhood Comparison"): an example's loss against the losses of
copies of it with a few words changed. A member's loss sits well below its neighbours'; an
unseen text's does not.

The perturbation: the paper fills masks with BERT. finemem downloads nothing, so each
neighbour is a seeded word swap: `swap_rate` of the words (at least one) replaced by words
drawn from the task's own vocabulary (the words of the non-member pool's completions).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from finemem.audit.attacks import AttackInputs, register_attack

_WORD = re.compile(r"[A-Za-z]{3,}")


def vocabulary(texts: list[str]) -> list[str]:
    """The distinct alphabetic words (3+ letters) of `texts`, sorted (a stable list to draw
    swaps from)."""
    return sorted({w for t in texts for w in _WORD.findall(t)})


def neighbour_texts(text: str, vocab: list[str], *, k: int, rate: float, seed) -> list[str]:
    """k copies of `text`, each with max(1, round(rate * words)) of its alphabetic words
    swapped for a different vocabulary word; seeded by `seed` (any repr-able value), so the
    same text gets the same neighbours on every run.

    >>> neighbour_texts("the cat sat", ["dog", "cat"], k=2, rate=0.1, seed=0)
    ['the dog sat', 'the cat dog']
    """
    spans = [m.span() for m in _WORD.finditer(text)]
    h = int(hashlib.sha256(repr(seed).encode()).hexdigest()[:16], 16)
    rng = np.random.default_rng(h)
    out = []
    for _ in range(k):
        if not spans or len(vocab) < 2:
            out.append(text)
            continue
        n = max(1, int(round(rate * len(spans))))
        pick = sorted(rng.choice(len(spans), size=min(n, len(spans)), replace=False))
        t, shift = text, 0
        for i in pick:
            a, b = spans[i]
            old = text[a:b]
            new = old
            while new == old:
                new = vocab[int(rng.integers(len(vocab)))]
            t = t[: a + shift] + new + t[b + shift:]
            shift += len(new) - len(old)
        out.append(t)
    return out


def neighbourhood_score(nll, neighbour_nll) -> np.ndarray:
    r"""Loss minus the mean loss of the neighbours; member when lower.

    .. math:: s_i = L(x_i) - \frac1k\sum_{j=1}^k L(\tilde x_{i,j})

    >>> neighbourhood_score([1.0, 2.0], [[2.0, 3.0], [2.0, 2.5]]).tolist()
    [-1.5, -0.25]
    """
    return np.asarray(nll, float) - np.asarray(neighbour_nll, float).mean(axis=1)


@register_attack("neighbourhood", member_when="lower", needs=("neighbours",),
                 paper="Mattern et al., Findings of ACL 2023")
def neighbourhood(inp: AttackInputs):
    """loss minus the mean loss of word-swapped neighbours"""
    nll = np.array([-s.logprob.mean() for s in inp.scores])
    return neighbourhood_score(nll, inp.need("neighbours"))
