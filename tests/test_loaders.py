"""Loaders: every source type, field mapping, chat rendering, and each bad-input error."""

import json

import pytest

from finemem.config import DataSource
from finemem.data.example import Example
from finemem.data.loaders import load_examples, render_chat
from finemem.errors import UserError

ROWS = [{"question": "2+3?", "solution": "It is 5.\n#### 5", "final": 5, "topic": "add"},
        {"question": "4*2?", "solution": "It is 8.\n#### 8", "final": 8, "topic": "mul"}]
QA_FIELDS = {"prompt": "question", "completion": "solution", "answer": "final"}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def load(path, **kw):
    return load_examples(DataSource(source=str(path), **kw))


def assert_qa_examples(exs, stem):
    assert exs == [
        Example("2+3?", "It is 5.\n#### 5", answer="5", id=f"{stem}-0", meta={"topic": "add"}),
        Example("4*2?", "It is 8.\n#### 8", answer="8", id=f"{stem}-1", meta={"topic": "mul"})]


def test_jsonl_with_field_mapping(tmp_path):
    p = write_jsonl(tmp_path / "qa.jsonl", ROWS)
    assert_qa_examples(load(p, fields=QA_FIELDS), "qa")


def test_jsonl_identity_columns_ids_n_and_blank_lines(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a", "completion": " b", "id": 7}\n\n'
                 '{"prompt": "c", "completion": " d", "id": "x"}\n'
                 '{"prompt": "e", "completion": " f", "id": "y"}\n', encoding="utf-8")
    exs = load(p)
    assert [(e.prompt, e.completion, e.id, e.meta) for e in exs] == [
        ("a", " b", "7", {}), ("c", " d", "x", {}), ("e", " f", "y", {})]
    assert [e.id for e in load(p, n=2)] == ["7", "x"]


def test_csv(tmp_path):
    p = tmp_path / "qa.csv"
    p.write_text('question,solution,final,topic\n2+3?,"It is 5.\n#### 5",5,add\n'
                 '4*2?,"It is 8.\n#### 8",8,mul\n', encoding="utf-8")
    assert_qa_examples(load(p, fields=QA_FIELDS), "qa")


def test_parquet(tmp_path):
    pd = pytest.importorskip("pandas")
    p = tmp_path / "qa.parquet"
    pd.DataFrame(ROWS).to_parquet(p)
    assert_qa_examples(load(p, fields=QA_FIELDS), "qa")


def test_datasets_folders(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(ROWS)
    ds.save_to_disk(str(tmp_path / "flat"))
    assert_qa_examples(load(tmp_path / "flat", fields=QA_FIELDS), "flat")
    other = datasets.Dataset.from_list([{"question": "q", "solution": "s", "final": 1,
                                         "topic": "t"}])
    datasets.DatasetDict({"train": ds, "test": other}).save_to_disk(str(tmp_path / "dd"))
    assert_qa_examples(load(tmp_path / "dd", fields=QA_FIELDS), "dd-train")
    test = load(tmp_path / "dd", split="test", fields=QA_FIELDS)
    assert [(e.prompt, e.answer, e.id) for e in test] == [("q", "1", "dd-test-0")]
    with pytest.raises(UserError, match="no split 'dev'; available: train, test"):
        load(tmp_path / "dd", split="dev", fields=QA_FIELDS)


def test_builtin_task():
    exs = load_examples(DataSource(source="builtin:summarize", n=3, seed=1))
    assert len(exs) == 3 and exs[0].id == "summarize-train-0"
    again = load_examples(DataSource(source="builtin:summarize", n=3, seed=1))
    assert exs == again
    with pytest.raises(UserError, match="'fields' does not apply"):
        load_examples(DataSource(source="builtin:summarize", fields={"prompt": "q"}))


def test_builtin_task_options(tmp_path):
    src = DataSource(source="builtin:arith", n=40, options={"pair_frac": 0.0, "events": [2, 2]})
    exs = load_examples(src)
    assert {e.meta["kind"] for e in exs} == {"chain"}
    assert {len(e.meta["amounts"]) for e in exs} == {2}
    with pytest.raises(UserError, match="no option 'pairs'.*options: max_value, pair_frac"):
        load_examples(DataSource(source="builtin:arith", options={"pairs": 0}))
    with pytest.raises(UserError, match="task 'qa' has no option 'x'; options: none"):
        load_examples(DataSource(source="builtin:qa", options={"x": 1}))
    with pytest.raises(UserError, match="only applies to a builtin task"):
        load(write_jsonl(tmp_path / "d.jsonl", ROWS), fields=QA_FIELDS, options={"x": 1})


def test_hub_id_offline_is_one_user_error(monkeypatch):
    import datasets

    def fail(*a, **k):
        raise ConnectionError("Couldn't reach 'someone/thing' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(UserError) as e:
        load_examples(DataSource(source="someone/thing"))
    assert str(e.value).startswith("someone/thing, field 'source': no such local file")
    assert "OfflineModeIsEnabled" in str(e.value)


CHAT = [{"messages": [{"role": "system", "content": "be brief"},
                      {"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "hello"}], "lang": "en"}]


def chat_tokenizer(template):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2, "hi": 3, "hello": 4}
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="</s>",
                                  unk_token="[UNK]")
    if template:
        tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n"
                             "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    return tok


def test_chat_with_template(tmp_path):
    p = write_jsonl(tmp_path / "chat.jsonl", CHAT)
    exs = load_examples(DataSource(source=str(p)), tokenizer=chat_tokenizer(True))
    # the reply as the template renders it, cut after the eos token (appended: none there)
    assert exs == [Example("<|system|>be brief\n<|user|>hi\n<|assistant|>", "hello\n</s>",
                           id="chat-0", meta={"lang": "en"}, chat=True)]


def test_chat_fallback_without_template(tmp_path):
    p = write_jsonl(tmp_path / "chat.jsonl", CHAT)
    expected = [Example("system: be brief\nuser: hi\nassistant:", " hello", id="chat-0",
                        meta={"lang": "en"})]
    assert load_examples(DataSource(source=str(p)), tokenizer=chat_tokenizer(False)) == expected
    assert load_examples(DataSource(source=str(p))) == expected
    assert render_chat(CHAT[0]["messages"]) == (expected[0].prompt, " hello", False)


def test_chat_mapped_column_and_bad_last_role(tmp_path):
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    p = write_jsonl(tmp_path / "c.jsonl", [{"conv": conv}, {"conv": conv[:1] * 2}])
    with pytest.raises(UserError) as e:
        load(p, fields={"messages": "conv"})
    assert str(e.value).startswith(f"{p}, row 2, field 'conv': the last message must be from "
                                   "the assistant")


# ------------------------------------------------------------------ bad input

def err(path, **kw) -> str:
    with pytest.raises(UserError) as e:
        load(path, **kw)
    return str(e.value)


def test_missing_path(tmp_path):
    assert err(tmp_path / "nope.jsonl").startswith(
        f"{tmp_path / 'nope.jsonl'}, field 'source': dataset path not found")


def test_malformed_jsonl_line_names_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", \n', encoding="utf-8")
    assert err(p).startswith(f"{p}, row 2: line 2 is not valid JSON")
    p.write_text('{"prompt": "a", "completion": "b"}\n[1, 2]\n', encoding="utf-8")
    assert "line 2 is a JSON list, not an object" in err(p)


def test_missing_field_names_row_field_and_columns(tmp_path):
    p = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "a", "completion": "b"},
                                           {"prompt": "c", "text": "d"}])
    msg = err(p)
    assert msg.startswith(f"{p}, row 2, field 'completion': missing required field 'completion'")
    assert "columns are: prompt, text" in msg
    msg = err(write_jsonl(tmp_path / "q.jsonl", ROWS))
    assert msg.startswith(f"{tmp_path / 'q.jsonl'}, row 1, field 'prompt': missing required")
    assert "fields: {prompt: <column>}" in msg
    csv = tmp_path / "m.csv"
    csv.write_text("question,solution\nq1,s1\nq2,\n", encoding="utf-8")
    mapped = {"prompt": "question", "completion": "solution"}
    assert err(csv, fields=mapped).startswith(f"{csv}, row 3, field 'solution': completion is "
                                              "empty")


def test_mapping_to_absent_column_and_unknown_field(tmp_path):
    p = write_jsonl(tmp_path / "qa.jsonl", ROWS)
    assert err(p, fields={"prompt": "query", "completion": "solution"}).startswith(
        f"{p}, field 'fields.prompt': column 'query' (mapped to prompt) is not in the data; "
        "columns are: question, solution, final, topic")
    assert "unknown finemem field 'target'" in err(p, fields={"target": "solution"})


def test_empty_dataset(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text("\n  \n", encoding="utf-8")
    assert err(p) == f"{p}: the dataset has no examples; add at least one row"
    c = tmp_path / "e.csv"
    c.write_text("prompt,completion\n", encoding="utf-8")
    assert "no examples" in err(c)


def test_not_utf8_names_line_and_offset(tmp_path):
    p = tmp_path / "latin.jsonl"
    p.write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": "caf\xe9", "completion": "x"}\n')
    # line 1 is 35 bytes; 0xe9 is byte 15 (0-based) of line 2
    assert err(p).startswith(f"{p}, row 2: not UTF-8: byte 0xe9 at byte offset 50")
    c = tmp_path / "latin.csv"
    c.write_bytes(b"prompt,completion\ncaf\xe9,x\n")
    assert err(c).startswith(f"{c}, row 2: not UTF-8: byte 0xe9 at byte offset 21")


def test_unknown_extension(tmp_path):
    p = tmp_path / "data.txt"
    p.write_text("hello", encoding="utf-8")
    assert err(p).startswith(f"{p}, field 'source': unknown file type '.txt'; use .jsonl")
    d = tmp_path / "plain_folder"
    d.mkdir()
    assert "not a datasets save_to_disk folder" in err(d)


def test_duplicate_ids(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "completion": "b", "id": 1},
                                           {"prompt": "c", "completion": "d", "id": 2},
                                           {"prompt": "e", "completion": "f", "id": "1"}])
    assert err(p).startswith(f"{p}, row 3, field 'id': duplicate id '1' (first on row 1)")


def test_non_string_prompt_or_completion_or_answer(tmp_path):
    p = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "a", "completion": "b"},
                                           {"prompt": ["x"], "completion": "b"}])
    assert err(p).startswith(f"{p}, row 2, field 'prompt': prompt must be a string, got list")
    p = write_jsonl(tmp_path / "u.jsonl", [{"prompt": "a", "completion": 3}])
    assert err(p).startswith(f"{p}, row 1, field 'completion': completion must be a string")
    p = write_jsonl(tmp_path / "v.jsonl", [{"prompt": "a", "completion": "b", "answer": True}])
    assert "answer must be a string or a number, got bool" in err(p)


def test_csv_row_with_extra_cells(tmp_path):
    c = tmp_path / "x.csv"
    c.write_text("prompt,completion\na,b\nc,d,e\n", encoding="utf-8")
    assert err(c) == f"{c}, row 3: the row has more cells than the header has columns"


# ---------------------------------------------------------------- hold out part of one file

def _holdout_rows(n=40, dup_every=5):
    # rows i and i+1 share a prompt when i % dup_every == 0: a prompt is never split
    return [{"prompt": f"q{i - (i % dup_every == 1)}", "completion": f" a{i}", "answer": i}
            for i in range(n)]


def test_holdout_split_is_disjoint_deterministic_and_complete(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", _holdout_rows())
    kept = load(p, split={"test": 0.25, "seed": 0})
    held = load(p, split={"test": 0.25, "seed": 0, "part": "test"})
    assert len(held) in (10, 11) and len(kept) + len(held) == 40
    assert {e.id for e in kept} | {e.id for e in held} == {f"d-{i}" for i in range(40)}
    assert not {e.prompt for e in kept} & {e.prompt for e in held}  # whole prompts only
    assert [int(e.id[2:]) for e in held] == sorted(int(e.id[2:]) for e in held)  # file order
    assert load(p, split={"test": 0.25, "seed": 0, "part": "test"}) == held  # stable
    assert load(p, split={"test": 0.25, "seed": 1, "part": "test"}) != held  # seeded
    # n keeps the first n of the chosen part
    assert load(p, split={"test": 0.25, "part": "test"}, n=3) == held[:3]
    assert load(p, split={"test": 0.25}, n=5) == kept[:5]


def test_holdout_csv_and_errors(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("prompt,completion\n" + "".join(f"p{i},c{i}\n" for i in range(20)))
    assert len(load(p, split={"test": 0.1, "part": "test"})) == 2
    one = write_jsonl(tmp_path / "one.jsonl", [{"prompt": "same", "completion": f" {i}"}
                                               for i in range(5)])
    with pytest.raises(UserError, match="at least two distinct prompts"):
        load(one, split={"test": 0.2})
    with pytest.raises(UserError, match="builtin task has its own test split"):
        load_examples(DataSource(source="builtin:arith", split={"test": 0.2}))
