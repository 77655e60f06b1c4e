"""ReCaLL, DC-PDD and the neighbourhood attack against MIMIR's formulas (iamgroot42/mimir,
the reference implementation the issue names; not installable here, so its formulas are
written out below as its source states them, from reading it; no code copied).

Read at:
- mimir/attacks/recall.py @ bdb3c0673dbc4562bc42cd5dfe661acb39aad763:
  `recall = ll_nonmember / lls`, with `lls = target_model.get_ll(document)` and
  `ll_nonmember = get_conditional_ll(...)`, which returns `-average_loss` over the document's
  tokens with the prefix before them;
- mimir/models.py @ 014d0ea96a922a807846d0fb35032889e294af66: `get_ll` returns
  `-np.mean(all_prob)` (all_prob: token log-probabilities), i.e. the mean NLL, positive;
  `get_lls` the per-text list of the same;
- mimir/attacks/dc_pdd.py @ cec898ef7b9220459fc20abcedd0cf5421a33516: frequency table
  Laplace-smoothed `(1 + c) / (sum(c) + V)`; the first occurrence of each token id kept;
  `alpha = p * log(1 / f)`; `alpha[alpha > a] = a` (a = 0.01); score `beta = -mean(alpha)`;
- mimir/attacks/neighborhood.py @ 576339bb6f75ded0d1a69a99b904ab5682609ac9:
  `d_based_score = loss - get_lls(neighbours)` with `loss = get_ll(document)`.

MIMIR's scores are all "lower = member" (its loss is the mean NLL); finemem's each carry their
own side (`member_when`). So the checks are: finemem's ReCaLL and DC-PDD equal minus MIMIR's
(finemem: member when higher), the neighbourhood score equals MIMIR's averaged over the
neighbours (both: member when lower), and the AUCs are the same number.
"""

import numpy as np
import pytest

from finemem.audit.attacks.dcpdd import dcpdd_score
from finemem.audit.attacks.neighbourhood import neighbourhood_score
from finemem.audit.attacks.recall import recall_score
from finemem.metrics import membership as mi

RNG = np.random.default_rng(20)
# fixed token log-probabilities of 12 texts (6 "members", 6 "non-members"), 5-9 tokens each
LP = [np.log(RNG.uniform(0.05, 0.95, size=int(RNG.integers(5, 10)))) for _ in range(12)]
LP_PREFIXED = [lp + RNG.normal(-0.3, 0.2, size=lp.size) for lp in LP]
IDS = [RNG.integers(0, 7, size=lp.size) for lp in LP]          # token ids, repeats included
COUNTS = np.array([40.0, 3.0, 0.0, 12.0, 7.0, 1.0, 25.0])      # a 7-token vocabulary
NB_NLL = RNG.uniform(0.5, 2.5, size=(12, 4))                  # 4 neighbours' mean NLL each
MEMBER = np.array([True] * 6 + [False] * 6)


def mimir_get_ll(all_prob):
    return -np.mean(all_prob)


def mimir_recall(lp, lp_prefixed):
    ll_nonmember = -mimir_get_ll(lp_prefixed)          # get_conditional_ll: -average_loss
    return ll_nonmember / mimir_get_ll(lp)


def mimir_dcpdd(lp, ids, counts, a=0.01):
    fre = (1 + counts) / (counts.sum() + len(counts))
    idx, seen = [], []
    for i, t in enumerate(ids):
        if t not in seen:
            idx.append(i)
            seen.append(t)
    alpha = np.exp(lp)[idx] * np.log(1 / fre[ids[idx]])
    alpha[alpha > a] = a
    return -np.mean(alpha)


def mimir_neighbourhood(lp, neighbour_losses):
    return mimir_get_ll(lp) - np.asarray(neighbour_losses)   # one difference per neighbour


def _auc(scores, side):
    s = np.asarray(scores, float)
    return mi.membership_auc(s[MEMBER], s[~MEMBER], member_when=side)


def test_recall_is_minus_mimirs_and_ranks_the_same():
    ours = recall_score([lp.mean() for lp in LP], [lp.mean() for lp in LP_PREFIXED])
    theirs = np.array([mimir_recall(a, b) for a, b in zip(LP, LP_PREFIXED)])
    assert ours == pytest.approx(-theirs, rel=1e-12)
    assert _auc(ours, "higher") == pytest.approx(_auc(theirs, "lower"))


@pytest.mark.parametrize("a", [0.01, 0.3, 10.0])   # MIMIR's default cap, partly, none clipped
def test_dcpdd_is_minus_mimirs_with_its_smoothing_and_clipping(a):
    ours = dcpdd_score(LP, IDS, COUNTS, cap=a)
    theirs = np.array([mimir_dcpdd(lp, ids, COUNTS, a=a) for lp, ids in zip(LP, IDS)])
    assert ours == pytest.approx(-theirs, rel=1e-12)
    if a != 0.01:  # at 0.01 nearly every token is clipped: ties, the AUC is still the same
        assert len(set(ours.round(9))) > 1
    assert _auc(ours, "higher") == pytest.approx(_auc(theirs, "lower"))


def test_neighbourhood_is_mimirs_averaged_over_the_neighbours():
    ours = neighbourhood_score([-lp.mean() for lp in LP], NB_NLL)
    theirs = np.array([mimir_neighbourhood(lp, nb).mean() for lp, nb in zip(LP, NB_NLL)])
    assert ours == pytest.approx(theirs, rel=1e-12)
    assert _auc(ours, "lower") == pytest.approx(_auc(theirs, "lower"))
