"""How an `Example` becomes tokens. Training and scoring both use this, so what is scored is
exactly what was trained.

    sequence = [bos] + tok(prompt) + tok(completion) + [eos]

Prompt and completion are tokenized separately (no special tokens added), so the boundary is
exact. `loss_on="completion"` puts the loss (and the engine's scores) on tok(completion) + [eos];
`loss_on="all"` on everything after [bos].

A chat example (`Example.chat`, data.format: chat) is already the template's rendering, special
tokens included, so nothing is added:

    sequence = tok(rendered conversation up to the assistant's turn) + tok(assistant's turn)

and the loss (and every score) falls on the assistant's turn only; with `loss_on="all"` on
everything after the first token.
"""

from __future__ import annotations

from dataclasses import dataclass

from finemem.data.example import Example


@dataclass
class Encoded:
    context: list[int]  # tokens the model conditions on (no loss)
    target: list[int]  # loss-bearing tokens

    @property
    def input_ids(self) -> list[int]:
        return self.context + self.target


def encode(tokenizer, ex: Example, *, loss_on: str = "completion",
           max_length: int | None = None) -> Encoded:
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if ex.chat:  # the template placed every special token itself
        bos, eos = [], []
    p = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(ex.completion, add_special_tokens=False)["input_ids"] + eos
    if loss_on == "all":
        # a chat example has no bos of finemem's own: its first token is the context
        context, target = (p[:1], p[1:] + c) if ex.chat and p else (bos, p + c)
    else:
        context, target = bos + p, c
    if max_length is not None and len(context) + len(target) > max_length:
        # Keep at least one target token; drop the oldest context, then the target's tail.
        keep_ctx = max(min(len(context), max_length - 1), 0)
        context = context[len(context) - keep_ctx:] if keep_ctx else []
        target = target[: max_length - len(context)]
    return Encoded(context=context, target=target)


def encode_prompt(tokenizer, prompt: str | Example) -> list[int]:
    """Tokens a generation starts from: [bos] + tok(prompt), or tok(prompt) for a chat
    example (the rendered conversation up to the assistant's turn)."""
    chat = isinstance(prompt, Example) and prompt.chat
    text = prompt.prompt if isinstance(prompt, Example) else prompt
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None and not chat else []
    return bos + tokenizer(text, add_special_tokens=False)["input_ids"]
