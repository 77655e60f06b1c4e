"""Tokenized training examples, the per-epoch batch order, and dynamic padding.

Usage:
    items = encode_examples(tok, examples, loss_on="completion", max_length=512)
    for idx in epoch_batches(len(items), batch_size=16, seed=0, epoch=3):
        batch = collate([items[i] for i in idx], pad_id=pad_id(tok))   # finemem.models.load

The order of epoch e is a permutation drawn from a generator seeded by (seed, e) alone, so a
resumed run replays exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib

import torch
from torch.nn.utils.rnn import pad_sequence

from finemem.data.format import encode

IGNORE = -100


def encode_examples(tokenizer, examples, *, loss_on: str, max_length: int | None
                    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input_ids, labels) per example; labels are -100 on context tokens.

    Repeated `Example` objects (data duplication) are encoded once and share their tensors.
    """
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    out = []
    for ex in examples:
        key = id(ex)
        if key not in cache:
            enc = encode(tokenizer, ex, loss_on=loss_on, max_length=max_length)
            ids = torch.tensor(enc.input_ids, dtype=torch.long)
            labels = ids.clone()
            labels[: len(enc.context)] = IGNORE
            cache[key] = (ids, labels)
        out.append(cache[key])
    return out


def items_digest(items: list[tuple[torch.Tensor, torch.Tensor]]) -> str:
    """sha256 of the tokenized training set (ids and labels, in order): a resume checks that
    the data it replays is the data the run started with."""
    h = hashlib.sha256()
    for ids, labels in items:
        h.update(ids.numpy().tobytes())
        h.update(labels.numpy().tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit generator seed that depends only on (seed, epoch)."""
    digest = hashlib.sha256(f"finemem-order:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def epoch_batches(n: int, *, batch_size: int, seed: int, epoch: int, num_processes: int = 1,
                  process_index: int = 0) -> list[list[int]]:
    """This process's micro-batches (lists of example indices) for one epoch.

    With several processes, micro-batch i of the global order goes to process i % P; the list
    is first extended by cycling from its start so that every process gets the same count.
    (The training loop does not use this: it splits each global micro-batch over the
    processes instead, `finemem.distributed.local_share`, so no example repeats.)
    """
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    perm = torch.randperm(n, generator=g).tolist()
    batches = [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    if num_processes > 1:
        extra = (-len(batches)) % num_processes
        batches = batches + [batches[i % len(batches)] for i in range(extra)]
        batches = batches[process_index::num_processes]
    return batches


def collate(items: list[tuple[torch.Tensor, torch.Tensor]], *, pad_id: int
            ) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch to its longest sequence (dynamic padding)."""
    ids = [it[0] for it in items]
    input_ids = pad_sequence(ids, batch_first=True, padding_value=pad_id)  # (B, T)
    labels = pad_sequence([it[1] for it in items], batch_first=True, padding_value=IGNORE)
    mask = pad_sequence([torch.ones_like(t) for t in ids], batch_first=True, padding_value=0)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
