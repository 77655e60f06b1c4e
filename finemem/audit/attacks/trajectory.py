"""The trajectory attack (finemem's own): a record's loss path over every checkpoint of the
run, which only a tool that keeps every checkpoint can read. A member's loss falls from the
base's early and stays down; a non-member's moves with the model's general improvement only.

The history: each earlier checkpoint's stored mean NLL of the same examples (the membership
probe stores it on every checkpoint it audits, base first); a checkpoint not yet audited is
left out of the path.
"""

from __future__ import annotations

import numpy as np

from finemem.audit.attacks import AttackInputs, register_attack


def trajectory_score(history_nll, current_nll) -> np.ndarray:
    r"""Mean drop of the loss from the base's over the checkpoints so far; member when
    higher.

    With :math:`L_{0,i}` the base's loss of example i (the first row of the history) and
    :math:`L_{c,i}` its loss at checkpoint c = 1..C (C the current one),

    .. math:: s_i = \frac1C\sum_{c=1}^{C} (L_{0,i} - L_{c,i})

    (0 at the base itself, where C = 0).

    >>> trajectory_score([[3.0, 3.0], [1.0, 2.5]], [0.5, 2.0]).tolist()   # base, ckpt 1; ckpt 2
    [2.25, 0.75]
    """
    h = np.asarray(history_nll, dtype=float)
    cur = np.asarray(current_nll, dtype=float)
    if h.shape[0] == 0:
        return np.zeros_like(cur)
    path = np.vstack([h[1:], cur[None, :]])                          # (C, n)
    return (h[0][None, :] - path).mean(axis=0)


def first_below_band(history_nll, member: np.ndarray, *, q: float = 0.05) -> np.ndarray:
    """Per example, the first checkpoint index (row of `history_nll`, (c, n)) where its loss
    fell below the non-members' q-quantile at that checkpoint; -1 when it never did.

    >>> first_below_band([[3, 3, 3, 3], [1, 3, 3, 2.9], [1, 1, 3, 2.9]],
    ...                  np.array([True, True, False, False]), q=0.0).tolist()
    [1, 2, -1, -1]
    """
    h = np.asarray(history_nll, dtype=float)
    non = ~np.asarray(member, dtype=bool)
    band = np.quantile(h[:, non], q, axis=1)                          # (c,)
    below = h < band[:, None]
    return np.where(below.any(0), below.argmax(0), -1)


@register_attack("trajectory", member_when="higher", needs=("history",),
                 paper="finemem (every checkpoint of the run)")
def trajectory(inp: AttackInputs):
    """mean drop of the loss from the base over every checkpoint so far"""
    nll = np.array([-s.logprob.mean() for s in inp.scores])
    return trajectory_score(inp.need("history"), nll)
