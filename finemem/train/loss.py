"""Training losses over causal-LM logits: cross-entropy and memorization-aware reweighting (MAR).

Usage:
    loss = causal_lm_loss(logits, labels, kind="mar", mar_detach=True)

`labels` has the input's shape with -100 on tokens that bear no loss (context and padding;
see `finemem.data.format.encode`). Position t of the logits predicts label t+1. Both losses are
normalised by the number of loss-bearing tokens, so a MAR loss and a CE loss are on the same
scale when every token is predicted with p = 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are upcast to float32 for the softmax; float64 stays float64."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Labels aligned with the logits: out[:, t] = labels[:, t + 1]; the last position gets -100.

    Shifting the labels (not the logits) avoids copying the (B, T, V) logits tensor.
    """
    return F.pad(labels, (0, 1), value=IGNORE)[:, 1:]  # (B, T)


def token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy -log p(y_t | x, y_<t), 0 where the label is -100.

    Parameters
    ----------
    logits : (B, T, V) tensor
    labels : (B, T) long tensor, unshifted (position t holds the token at t)

    Returns
    -------
    (B, T) float tensor (at least float32); entry t is the loss of predicting labels[:, t + 1].
    """
    tgt = shift_labels(labels)  # (B, T)
    ce = F.cross_entropy(_upcast(logits).flatten(0, 1), tgt.flatten(), ignore_index=IGNORE,
                         reduction="none")  # (B*T,)
    return ce.view(tgt.shape)


def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Mean cross-entropy over loss-bearing tokens.

    .. math:: L = \frac{1}{N} \sum_{t \in \mathcal{T}} -\log p(y_t \mid x, y_{<t})

    where :math:`\mathcal{T}` is the set of tokens whose label is not -100 and N its size.
    """
    return rows_loss(logits.flatten(0, 1), shift_labels(labels).flatten(), kind="ce")


def mar_loss(logits: torch.Tensor, labels: torch.Tensor, *, detach: bool = True) -> torch.Tensor:
    r"""Memorization-aware reweighting (Ruan et al. 2025, arXiv 2508.04117).

    .. math:: L = \frac{1}{N} \sum_{t \in \mathcal{T}} (1 - p_t)\, \mathrm{CE}_t,
              \qquad p_t = p(y_t \mid x, y_{<t}) = e^{-\mathrm{CE}_t}

    Tokens the model already predicts confidently (p_t near 1) are down-weighted, so training
    does not keep sharpening the exact wording of the training solutions.

    Parameters
    ----------
    detach : if True (default) the weight (1 - p_t) is a constant, so the gradient is
        (1 - p_t) times the CE gradient. If False the weight is differentiated too, which adds
        a term that pushes confident tokens less: dL_t/dz = (p_t log p_t - (1 - p_t)) (e_y - q).
        The paper does not say which it uses; detaching is the usual reading of "reweighting".

    Examples
    --------
    >>> z = torch.tensor([[[0.0, 0.0, float(torch.log(torch.tensor(2.0)))], [0.0, 0.0, 0.0]]])
    >>> y = torch.tensor([[-100, 2]])          # p = 1/2, CE = ln 2, weight = 1/2
    >>> round(float(mar_loss(z, y)), 5)
    0.34657
    """
    return rows_loss(logits.flatten(0, 1), shift_labels(labels).flatten(), kind="mar",
                     mar_detach=detach)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, *, kind: str = "ce",
                   mar_detach: bool = True) -> torch.Tensor:
    """The training loss named by `TrainingConfig.loss` ('ce' or 'mar')."""
    return rows_loss(logits.flatten(0, 1), shift_labels(labels).flatten(), kind=kind,
                     mar_detach=mar_detach)


def rows_loss(logits: torch.Tensor, targets: torch.Tensor, *, kind: str = "ce",
              mar_detach: bool = True) -> torch.Tensor:
    """`causal_lm_loss` over rows that are already aligned: logits (N, V) and the tokens they
    predict (N,), -100 where no loss falls. The training loop passes only the loss-bearing
    positions' logits (the head applied to those hidden states alone), the same loss as over
    the whole (B, T, V) tensor."""
    if kind not in ("ce", "mar"):
        raise ValueError(f"unknown loss '{kind}'; expected 'ce' or 'mar'")
    n = (targets != IGNORE).sum().clamp(min=1)
    if kind == "ce":
        return F.cross_entropy(_upcast(logits), targets, ignore_index=IGNORE,
                               reduction="sum") / n
    ce = F.cross_entropy(_upcast(logits), targets, ignore_index=IGNORE,
                         reduction="none")  # (N,), 0 off the loss tokens
    w = 1.0 - torch.exp(-ce)  # (N,); 0 off the loss tokens since exp(0) = 1
    if mar_detach:
        w = w.detach()
    return (w * ce).sum() / n
