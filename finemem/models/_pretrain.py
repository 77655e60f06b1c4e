"""The steps of a base-model build: corpus, tokenizer, model, pretraining loop, save.

Called by `finemem.models.base.build_base`; builds into a directory that the caller renames.
"""

from __future__ import annotations

import random
from pathlib import Path

from finemem.models.base import BOS, EOS, PAD


def build(spec: dict, out: Path, *, progress: bool = True, device: str = "auto") -> dict:
    """Build corpus, tokenizer and model from `spec` (see base.build_spec) into `out`,
    pretraining on `device`."""
    import torch

    from finemem.models.load import pick_device

    dev = pick_device(device)
    size = spec["size"]
    texts, counts = corpus(spec)
    tok = train_tokenizer(texts, vocab=size["vocab"])
    model = make_model(size, tok).to(dev)
    blocks = pack(texts, tok, ctx=size["ctx"]).to(dev)  # (n_blocks, ctx)
    losses = pretrain(model, blocks, size, seed=spec["seeds"]["model"], progress=progress)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    if not (out / "model.safetensors").exists():
        raise RuntimeError(f"save_pretrained wrote no model.safetensors in {out}")
    return {"n_params": sum(p.numel() for p in model.parameters()),
            "corpus_texts": counts, "corpus_tokens": int(blocks.numel()),
            "final_loss": round(sum(losses[-20:]) / max(1, len(losses[-20:])), 4),
            "torch": torch.__version__, "device": dev.type}


def corpus(spec: dict) -> tuple[list[str], dict[str, int]]:
    """Mix `pretrain_texts` of every task in the spec, by characters: arith gets `arith_share`
    of `chars`, the other tasks split the rest evenly."""
    from finemem.data.tasks import get_task

    size, seed = spec["size"], spec["seeds"]["corpus"]
    names = sorted(spec["corpus"]["tasks"])
    others = [n for n in names if n != "arith"]
    share = {}
    if "arith" in names:
        share["arith"] = size["arith_share"] if others else 1.0
    for n in others:
        share[n] = (1.0 - share.get("arith", 0.0)) / len(others)
    texts, counts = [], {}
    for n in names:
        task = get_task(n)
        try:
            probe = task.pretrain_texts(50, seed=seed)  # prefix-stable: a sample of the same
        except NotImplementedError:
            counts[n] = 0
            continue
        mean_len = max(1.0, sum(map(len, probe)) / max(1, len(probe)))
        got = task.pretrain_texts(max(1, int(size["chars"] * share[n] / mean_len)), seed=seed)
        texts.extend(got)
        counts[n] = len(got)
    random.Random(seed).shuffle(texts)
    return texts, counts


def train_tokenizer(texts: list[str], *, vocab: int):
    """Byte-level BPE with bos/eos/pad; numbers 0..99 are forced to be single tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[BOS, EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    # Numbers appear in many contexts; a block of them ensures " 17" and "17" merge early.
    nums = [str(i) for i in range(100)]
    numbers = [" " + " ".join(nums) + "\n" + "\n".join(nums)] * 500
    tok.train_from_iterator(texts + numbers, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                   pad_token=PAD, clean_up_tokenization_spaces=False)


def make_model(size: dict, tok):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=size["hidden"], intermediate_size=size["ffn"],
        num_hidden_layers=size["layers"], num_attention_heads=size["heads"],
        num_key_value_heads=size["heads"], max_position_embeddings=size["ctx"],
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def pack(texts: list[str], tok, *, ctx: int):
    """[bos] + tok(text) + [eos] for every text, concatenated and cut into ctx-long blocks."""
    import torch

    ids = tok(texts, add_special_tokens=False)["input_ids"]
    flat: list[int] = []
    for seq in ids:
        flat.append(tok.bos_token_id)
        flat.extend(seq)
        flat.append(tok.eos_token_id)
    n = len(flat) // ctx
    return torch.tensor(flat[: n * ctx], dtype=torch.long).view(n, ctx)


def pretrain(model, blocks, size: dict, *, seed: int, progress: bool) -> list[float]:
    """Plain AdamW loop over shuffled packed blocks, warmup + cosine schedule."""
    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from finemem.models.base import lr_at

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=size["lr"], betas=(0.9, 0.95),
                            weight_decay=0.05)
    model.train()
    order, pos, losses = torch.randperm(len(blocks), generator=g), 0, []
    cols = (TextColumn("pretraining"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]:.3f}"), TimeRemainingColumn())
    with Progress(*cols, disable=not progress, transient=False) as bar:
        task = bar.add_task("pretrain", total=size["steps"], loss=float("nan"))
        for step in range(size["steps"]):
            if pos + size["batch"] > len(order):
                order, pos = torch.randperm(len(blocks), generator=g), 0
            batch = blocks[order[pos: pos + size["batch"]]]  # (B, ctx)
            pos += size["batch"]
            for group in opt.param_groups:
                group["lr"] = lr_at(step, lr=size["lr"], warmup=size["warmup"],
                                    total=size["steps"], final_lr_frac=size["final_lr_frac"])
            loss = model(input_ids=batch, labels=batch).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            bar.update(task, advance=1, loss=sum(losses[-20:]) / len(losses[-20:]))
            if progress and not bar.console.is_terminal and (step + 1) % 50 == 0:
                bar.console.print(f"pretraining step {step + 1}/{size['steps']} "
                                  f"loss {sum(losses[-20:]) / len(losses[-20:]):.3f}")
    model.eval()
    return losses
