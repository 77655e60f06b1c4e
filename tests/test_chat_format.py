"""Chat-formatted fine-tuning: with data.format: chat (or a messages column) a row is a one-turn
conversation rendered by the tokenizer's chat template, and the loss mask (what training and
every score use) is exactly the assistant's turn as the template renders it. Checked on
SmolLM2's template (byte-level tokenizer; SmolLM2's own tokenizer too when it is installed) and
on a hand-written template without an end-of-turn token."""

import json

import pytest
import torch

from _tiny_gguf import SMOLLM2_TEMPLATE
from finemem.config import parse_config
from finemem.data.format import encode, encode_prompt
from finemem.data.loaders import load_examples
from finemem.errors import UserError
from finemem.train.batches import IGNORE, encode_examples

HANDWRITTEN = ("{% for m in messages %}### {{ m['role'] }}:\n{{ m['content'] }}\n\n{% endfor %}"
               "{% if add_generation_prompt %}### assistant:\n{% endif %}")
ROWS = [{"prompt": "What is 2 plus 3?", "completion": " 2 plus 3 is 5.", "id": "a"},
        {"prompt": "Name a colour.", "completion": "Blue, like the sea.", "id": "b"}]


def byte_tokenizer(template):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(special + list(bytes_to_unicode().values()))}
    t = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<|im_start|>",
                                  eos_token="<|im_end|>", unk_token="<|endoftext|>",
                                  pad_token="<|im_end|>")
    tok.add_special_tokens({"additional_special_tokens": special})
    tok.chat_template = template
    return tok


def smollm2_tokenizer():
    from transformers import AutoTokenizer

    from finemem.models.named import status

    row = next(r for r in status() if r["name"] == "smollm2-135m")
    if not row["folder"]:
        pytest.skip("smollm2-135m is not installed (finemem models get smollm2-135m)")
    return AutoTokenizer.from_pretrained(row["folder"])


def cfg_for(tmp_path, fmt="chat", rows=ROWS):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return parse_config({"run_dir": str(tmp_path / "run"),
                         "data": {"train": {"source": str(data)}, "format": fmt}})


TOKENIZERS = {"smollm2-template": lambda: byte_tokenizer(SMOLLM2_TEMPLATE),
              "handwritten": lambda: byte_tokenizer(HANDWRITTEN),
              "smollm2-real": smollm2_tokenizer}


@pytest.mark.parametrize("which", list(TOKENIZERS))
def test_loss_mask_is_the_templates_assistant_turn(tmp_path, which):
    tok = TOKENIZERS[which]()
    cfg = cfg_for(tmp_path)
    exs = load_examples(cfg.data.train, tokenizer=tok)
    items = encode_examples(tok, exs, loss_on="completion", max_length=512)
    for row, ex, (ids, labels) in zip(ROWS, exs, items):
        conv = [{"role": "user", "content": row["prompt"]},
                {"role": "assistant", "content": row["completion"].strip()}]
        head = tok.apply_chat_template(conv[:1], tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(conv, tokenize=False)
        assert ex.chat and ex.prompt == head and full.startswith(head)
        reply = full[len(head):]
        # the template's reply, up to and with its end-of-turn token (appended when the
        # template has none: the hand-written one)
        end = reply.find("<|im_end|>")
        want = reply[:end + len("<|im_end|>")] if end >= 0 else reply + "<|im_end|>"
        mask = labels != IGNORE
        assert tok.decode(ids[mask]) == want
        assert tok.decode(ids[~mask]) == head  # no bos of finemem's own before the template's
        assert mask[len(ids) - int(mask.sum()):].all()  # the reply is one block at the end
        enc = encode(tok, ex, loss_on="completion", max_length=512)
        assert enc.input_ids == ids.tolist() and len(enc.target) == int(mask.sum())
        assert encode_prompt(tok, ex) == enc.context  # generation starts where scoring does
        if which != "smollm2-real":  # a byte-level vocabulary: no merge across the boundary
            assert ids.tolist() == tok(head + want, add_special_tokens=False)["input_ids"]


def test_messages_column_auto_chat_and_plain(tmp_path):
    tok = byte_tokenizer(SMOLLM2_TEMPLATE)
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    rows = [{"messages": conv, "id": "m"}]
    [ex] = load_examples(cfg_for(tmp_path, "auto", rows).data.train, tokenizer=tok)
    assert ex.chat and ex.completion == "hello<|im_end|>"
    assert ex.prompt.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    [ex] = load_examples(cfg_for(tmp_path, "plain", rows).data.train, tokenizer=tok)
    assert not ex.chat and (ex.prompt, ex.completion) == ("user: hi\nassistant:", " hello")
    # prompt/completion rows stay plain unless data.format says chat
    [ex, _] = load_examples(cfg_for(tmp_path, "auto").data.train, tokenizer=tok)
    assert not ex.chat and ex.prompt == ROWS[0]["prompt"]


def test_chat_format_reaches_eval_sets_and_builtin_tasks(tmp_path):
    from finemem.audit.evalsets import eval_sets

    tok = byte_tokenizer(SMOLLM2_TEMPLATE)
    cfg = parse_config({"run_dir": str(tmp_path / "run"), "data": {
        "train": {"source": "builtin:qa", "n": 4}, "format": "chat"}})
    train = load_examples(cfg.data.train, tokenizer=tok)
    assert all(e.chat and e.completion.endswith("<|im_end|>") for e in train)
    sets = eval_sets(cfg, tok)
    assert sets and all(e.chat for s in sets.values() for e in s.examples)


def test_loss_on_all_with_chat_skips_only_the_first_token(tmp_path):
    tok = byte_tokenizer(SMOLLM2_TEMPLATE)
    [ex, _] = load_examples(cfg_for(tmp_path).data.train, tokenizer=tok)
    enc = encode(tok, ex, loss_on="all")
    assert len(enc.context) == 1 and tok.decode(enc.context + enc.target) == \
        ex.prompt + ex.completion


def test_chat_format_without_template_is_one_line(tmp_path):
    tok = byte_tokenizer(None)
    with pytest.raises(UserError) as e:
        load_examples(cfg_for(tmp_path).data.train, tokenizer=tok)
    assert "field 'data.format': data.format: chat needs a tokenizer with a chat template" \
        in str(e.value)
    # without a tokenizer (input checks that load no model) the rows are read as plain
    assert not load_examples(cfg_for(tmp_path).data.train)[0].chat


def test_training_scores_what_the_engine_scores(tmp_path):
    """Membership, canaries and secrets score engine targets built by the same encode: the
    scored tokens of a chat example are its trained tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from finemem.engine import score

    tok = byte_tokenizer(SMOLLM2_TEMPLATE)
    exs = load_examples(cfg_for(tmp_path).data.train, tokenizer=tok)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16,
                                         intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1)).eval()
    items = encode_examples(tok, exs, loss_on="completion", max_length=512)
    encs = [encode(tok, e) for e in exs]
    scores = score(model, [(p.context, p.target) for p in encs], min_k_stats=False)
    for (ids, labels), s in zip(items, scores):
        assert len(s.logprob) == int((labels != IGNORE).sum())
        with torch.no_grad():
            logits = model(input_ids=ids[None]).logits[0, :-1]
        lp = torch.log_softmax(logits.double(), -1).gather(-1, ids[1:, None])[:, 0]
        want = lp[(labels[1:] != IGNORE)].numpy()
        assert abs(want - s.logprob).max() < 1e-4
