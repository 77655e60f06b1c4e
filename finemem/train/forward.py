"""One micro-batch's training loss, with the output head applied only where a loss falls.

Usage:
    parts = head_parts(model, acc, training)      # once per run; None: the model's own forward
    loss = batch_loss(model, batch, training, parts, acc)

A 49,152-word head over every position of a batch of 8 x 128 tokens is a 201 MB float32 logits
tensor, and its log-softmax and gradients are as large again. With the loss on the completion
only, most positions bear no loss: the model body runs once, the hidden states of the
loss-bearing positions are gathered (row-major, the order of the flattened logits) and only
they go through the head, so the loss is the one over the full logits (`rows_loss`) up to the
float summation order. The split is the engine's (`finemem.engine.score.split_head`: a plain
`Linear` head, no logit soft-capping or scaling). Under DDP or torch.compile the model must run
through its wrapper (gradient sync, the compiled graph), so those runs keep the full forward.

Heads smaller than `SPLIT_MIN_VOCAB` words keep the full forward too: their logits are small,
so the split saves little memory, and the different float summation order (the same loss to
about 1e-7) drifts over a long run into other checkpoints. The built-in models (vocabularies of
1-8k) therefore train bit for bit as before, and the figures the docs quote from them still
reproduce; the split is for the real models (SmolLM2: 49,152 words).
"""

from __future__ import annotations

import torch

from finemem.engine.score import LARGE_HEAD, split_head
from finemem.train.loss import IGNORE, causal_lm_loss, rows_loss, shift_labels


SPLIT_MIN_VOCAB = LARGE_HEAD


def head_parts(model, acc, training):
    """(body, head) of the model to train, or None where the full forward runs."""
    if acc.num_processes > 1 or training.compile:
        return None
    parts = split_head(acc.unwrap_model(model))
    if parts is None or parts[1].out_features < SPLIT_MIN_VOCAB:
        return None
    return parts


def batch_loss(model, batch: dict[str, torch.Tensor], training, parts, acc) -> torch.Tensor:
    """The `training.loss` of one collated micro-batch (`finemem.train.batches.collate`)."""
    if parts is None:
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits  # (B, T, V)
        return causal_lm_loss(logits, batch["labels"], kind=training.loss,
                              mar_detach=training.mar_detach)
    body, head = parts
    tgt = shift_labels(batch["labels"])  # (B, T)
    keep = tgt != IGNORE
    with acc.autocast():  # what the prepared model's forward does under mixed precision
        hidden = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      use_cache=False)[0]  # (B, T, H)
        logits = head(hidden[keep])  # (N, V), N = loss-bearing positions
    return rows_loss(logits, tgt[keep], kind=training.loss, mar_detach=training.mar_detach)
