"""The blind baseline (Das, Zhang and Tramèr 2024, "Blind Baselines Beat Membership
Inference Attacks for Foundation Models"): how well a classifier that never sees the model
tells members from non-members by their text alone. When it separates them, members and
non-members differ in distribution, and an attack's AUC measures that shift, not memorization.

Usage:
    from finemem.metrics.blind import blind_baseline_scores, blind_baseline_auc
    s_mem, s_non = blind_baseline_scores(member_texts, nonmember_texts, seed=0)  # out-of-fold
    auc = blind_baseline_auc(member_texts, nonmember_texts)

The classifier: word 1-2-gram and character 3-gram counts (TF-IDF weighted) plus three length
features (characters, words, mean word length, standardised), logistic regression, scored
out of fold by stratified k-fold cross-validation with a fixed seed (scikit-learn).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from finemem.metrics.registry import register_metric


def _lengths(texts: list[str]) -> np.ndarray:
    w = [t.split() for t in texts]
    return np.array([[len(t), len(x), (sum(map(len, x)) / len(x)) if x else 0.0]
                     for t, x in zip(texts, w)], dtype=float)            # (n, 3)


def blind_baseline_scores(member_texts, nonmember_texts, *, folds: int = 5,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    r"""Out-of-fold P(member | text) of each member and non-member text, from a bag-of-n-grams
    + length logistic regression trained on the other folds (stratified, shuffled with
    `seed`). Fewer than 2 texts on a side, or folds > the smaller side: the largest k-fold the
    data allows (k >= 2); with fewer than 2 per side, nan scores.

    .. math:: \hat p_i = \sigma(w_{-f(i)}^\top \phi(x_i) + b_{-f(i)})

    with :math:`\phi` the TF-IDF n-gram counts and standardised lengths, and
    :math:`w_{-f}` fitted without fold f.
    """
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    m, n = [str(t) for t in member_texts], [str(t) for t in nonmember_texts]
    k = min(folds, len(m), len(n))
    if k < 2:
        return np.full(len(m), math.nan), np.full(len(n), math.nan)
    # folds drawn over the texts in sorted order: the result does not depend on input order
    perm = sorted(range(len(m) + len(n)), key=lambda i: (i >= len(m), (m + n)[i]))
    texts = [(m + n)[i] for i in perm]
    y = np.array([1.0 if i < len(m) else 0.0 for i in perm])
    out = np.zeros(len(texts))
    for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(texts, y):
        words = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
        chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3), sublinear_tf=True)
        tr_t, te_t = [texts[i] for i in tr], [texts[i] for i in te]
        L = _lengths(tr_t)
        mu, sd = L.mean(0), L.std(0) + 1e-9
        def feats(t, fit):
            a = words.fit_transform(t) if fit else words.transform(t)
            b = chars.fit_transform(t) if fit else chars.transform(t)
            return hstack([a, b, csr_matrix((_lengths(t) - mu) / sd)]).tocsr()
        clf = LogisticRegression(C=1.0, max_iter=2000)
        clf.fit(feats(tr_t, True), y[tr])
        out[te] = clf.predict_proba(feats(te_t, False))[:, 1]
    back = np.empty(len(texts))
    back[perm] = out
    return back[: len(m)], back[len(m):]


@register_metric("blind_baseline_auc", higher_is_better=False, more_memorized_when=None,
                 inputs="text_sets")
def blind_baseline_auc(member_texts, nonmember_texts, *, folds: int = 5,
                       seed: int = 0) -> float:
    """ROC AUC of the model-free text classifier (`blind_baseline_scores`, out of fold): 0.5
    when members and non-members cannot be told apart by text; nan with a warning when a side
    has fewer than 2 texts.

    >>> mem = ["refund order 1", "refund order 2", "refund order 3", "refund order 4"]
    >>> non = ["weather is sunny", "weather is rainy", "weather is cold", "weather is hot"]
    >>> blind_baseline_auc(mem, non, folds=2)
    1.0
    """
    s_m, s_n = blind_baseline_scores(member_texts, nonmember_texts, folds=folds, seed=seed)
    if s_m.size < 2 or s_n.size < 2 or not np.isfinite(s_m).all():
        warnings.warn("blind_baseline_auc: needs at least 2 texts on each side; returning nan",
                      RuntimeWarning, stacklevel=2)
        return math.nan
    from finemem.metrics.membership import membership_auc

    return membership_auc(s_m, s_n, member_when="higher")


def distribution_shift(lo: float, *, threshold: float = 0.55) -> bool:
    """True when the blind baseline's interval lies above `threshold` (its lower bound)."""
    return lo is not None and math.isfinite(lo) and lo > threshold


SHIFT_NOTE = ("members and non-members differ in distribution: attack AUCs measure that, "
              "not memorization")
