"""Load a `DataSource` into a list of `Example`s.

Usage:
    from finemem.config import DataSource
    examples = load_examples(DataSource(source="data/train.jsonl",
                                        fields={"prompt": "question", "completion": "answer"}))

Sources:
- ``builtin:<task>``: a built-in procedural task (``split``, ``seed``, ``n``, default n = 1000);
- a ``.jsonl`` (one JSON object per line), ``.csv`` (header row) or ``.parquet`` file;
- a folder written by ``Dataset.save_to_disk`` (used as is) or ``DatasetDict.save_to_disk``
  (``split`` picks the split);
- a Hugging Face hub dataset id (``datasets.load_dataset(id, split=split)``), network permitting.
  Recent ``datasets`` releases never run dataset scripts, so ``trust_remote_code`` has no effect.

Columns: ``fields`` maps a finemem field (prompt, completion, answer, id, messages) to your column;
a field left unmapped uses the column of the same name when there is one. Every other column
goes to ``Example.meta``. Numbers in ``answer``/``id`` columns become strings. Without an id
column the id is ``"<file stem>-<index>"`` (``"<name>-<split>-<index>"`` for a DatasetDict or
hub dataset), index counting rows from 0.

Chat style: a ``messages`` column (a list of ``{"role", "content"}``, the last one from the
assistant) is used when there is no prompt/completion pair or when ``fields`` maps it; with
``data.format: chat`` a prompt/completion row becomes the one-turn conversation
``[{user: prompt}, {assistant: completion}]``. With a tokenizer that has a chat template, prompt =
the template's rendering of all messages but the last, with the generation prompt; completion =
what the template renders after it for the last message (the reply and its end-of-turn token:
the text is cut after the tokenizer's eos token, or the eos token is appended when the turn has
none), and the example is marked ``chat`` so that encoding adds no tokens of its own. Without a
template the fallback is plain lines, prompt = ``"user: hi\\nassistant:"`` and completion =
``" hello"`` (``data.format: chat`` then refuses). ``data.format`` (auto | chat | plain) reaches
a source as its private ``_format`` (set by `finemem.config.DataConfig`); ``plain`` renders
messages as plain lines even when there is a template.

Hold out part of one file: ``split: {test: 0.15, seed: 0}`` (a `finemem.config.HoldOut`) divides
the examples in two. The held-out share is made of whole prompts, ranked by a hash of
(seed, prompt text), so it is stable (the same rows for the same file and seed, whatever ``n``)
and never shares a prompt with the rest; its size is ``round(test * examples)`` (at least one
example, and it may run over by the rest of the last prompt's rows). ``part: train`` (default)
reads the rest, ``part: test`` the held-out share; ``n`` then keeps the first n of that part.
Ids keep the row's index in the whole file. For a DatasetDict folder or a hub dataset the
``train`` split is the one divided. A builtin task has its own test split and no hold-out.

Errors are `UserError`s naming the file, the row and the field. "row" is the line number for
JSONL and CSV (the CSV header is line 1) and the 1-based row number for Parquet and datasets.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

from finemem.data.example import Example
from finemem.errors import UserError

FIELDS = ("prompt", "completion", "answer", "id", "messages")
FILE_TYPES = (".jsonl", ".csv", ".parquet")
DEFAULT_BUILTIN_N = 1000
MAX_LINE_BYTES = 16 << 20  # a JSONL line this long is not one example (a whole file on one line)
# Suffixes that mark a source as a local path even when it does not exist.
_PATH_SUFFIXES = FILE_TYPES + (".json", ".txt", ".tsv", ".arrow", ".gz", ".zip", ".xlsx")

Rows = list[tuple[int, dict[str, Any]]]  # (row number for errors, record)


def load_examples(src, *, tokenizer=None, trust_remote_code: bool = False) -> list[Example]:
    """Read `src` (a `finemem.config.DataSource`) into `Example`s, the first ``src.n`` kept.

    `tokenizer` renders chat-style ``messages`` with its chat template when it has one.
    """
    del trust_remote_code  # kept for API stability; see the module docstring
    if src.source.startswith("builtin:"):
        return _load_builtin(src, tokenizer)
    if src.options:
        raise UserError("'options' only applies to a builtin task; remove it",
                        source=src.source, field="options")
    hold = _holdout_of(src)
    rows, origin, stem = _read_rows(src)
    if not rows:
        raise UserError("the dataset has no examples; add at least one row", source=origin)
    if hold is None:
        rows = rows[: src.n]  # n=None keeps all
        return _to_examples(rows, src.fields, origin=origin, stem=stem, tokenizer=tokenizer,
                            fmt=_format_of(src))
    examples = _to_examples(rows, src.fields, origin=origin, stem=stem, tokenizer=tokenizer,
                            fmt=_format_of(src))
    kept, held = split_holdout(examples, hold.test, hold.seed, origin=origin)
    return (held if hold.part == "test" else kept)[: src.n]


def split_holdout(examples: list[Example], test: float, seed: int = 0, *,
                  origin: str = "") -> tuple[list[Example], list[Example]]:
    """(kept, held_out): about `test` of `examples` held out by whole prompts (see the module
    docstring); both parts keep the file's order and never share a prompt."""
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex.prompt, []).append(i)
    if len(groups) < 2:
        raise UserError("holding out a test share needs at least two distinct prompts; the "
                        f"data has {len(groups)}", source=origin or None, field="split.test")
    k = min(len(examples) - 1, max(1, round(test * len(examples))))
    ranked = sorted(groups, key=lambda p: hashlib.sha256(f"{seed}\0{p}".encode()).digest())
    held: set[int] = set()
    for prompt in ranked[:-1]:  # the last prompt always stays, so neither part is empty
        if len(held) >= k:
            break
        held.update(groups[prompt])
    return ([ex for i, ex in enumerate(examples) if i not in held],
            [ex for i, ex in enumerate(examples) if i in held])


def render_chat(messages: list[dict], tokenizer=None, *,
                plain: bool = False) -> tuple[str, str, bool]:
    """(prompt, completion, chat) of a conversation whose last message is the assistant's reply:
    the chat template's rendering split at the assistant's turn (chat=True), or plain lines
    when the tokenizer has no template or `plain` is set (chat=False)."""
    history, last = messages[:-1], messages[-1]
    if plain or tokenizer is None or not getattr(tokenizer, "chat_template", None):
        prompt = "".join(f"{m['role']}: {m['content']}\n" for m in history) + "assistant:"
        return prompt, " " + last["content"], False
    prompt = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the template renders the history differently once the reply is "
                         "added, so the reply's tokens cannot be told apart")
    turn = full[len(prompt):]
    eos = getattr(tokenizer, "eos_token", None)
    if eos:
        start = turn.find(last["content"])
        end = turn.find(eos, start + len(last["content"]) if start >= 0 else 0)
        turn = turn[: end + len(eos)] if end >= 0 else turn + eos
    return prompt, turn, True


# ---------------------------------------------------------------- sources -> raw rows

def _load_builtin(src, tokenizer=None) -> list[Example]:
    from finemem.data.tasks import get_task

    if src.fields:
        raise UserError("'fields' does not apply to a builtin task; remove it",
                        source=src.source, field="fields")
    if _holdout_of(src) is not None:
        raise UserError("a builtin task has its own test split: hold nothing out, and name "
                        "split: test under data.eval instead", source=src.source, field="split")
    task = get_task(src.source.split(":", 1)[1], **src.options)
    examples = task.generate(src.split, src.n or DEFAULT_BUILTIN_N, src.seed)
    if _format_of(src) != "chat" or tokenizer is None:
        return examples
    if not getattr(tokenizer, "chat_template", None):
        raise _no_template(src.source)
    out = []
    for ex in examples:
        prompt, completion, _ = render_chat(_one_turn(ex.prompt, ex.completion), tokenizer)
        out.append(dataclasses.replace(ex, prompt=prompt, completion=completion, chat=True))
    return out


def _one_turn(prompt: str, completion: str) -> list[dict]:
    """A prompt/completion row as a conversation; the whitespace that joins the two in plain
    text (a completion's leading space) is not part of either message."""
    return [{"role": "user", "content": prompt.rstrip()},
            {"role": "assistant", "content": completion.lstrip()}]


def _no_template(source: str) -> UserError:
    return UserError("data.format: chat needs a tokenizer with a chat template, and this "
                     "model's has none; use data.format: plain (or auto)", source=source,
                     field="data.format")


def _format_of(src) -> str:
    """data.format as the source carries it (auto | chat | plain)."""
    return getattr(src, "_format", None) or "auto"


def _holdout_of(src):
    """The source's `HoldOut` (split: {test: ...}), or None for a plain split name."""
    return None if isinstance(src.split, str) else src.split


def _split_name(src) -> str:
    return "train" if _holdout_of(src) is not None else src.split


def _looks_local(s: str) -> bool:
    p = Path(s).expanduser()
    if p.exists() or p.suffix.lower() in _PATH_SUFFIXES:
        return True
    if s.startswith(("/", ".", "~")) or "\\" in s or s.count("/") >= 2:
        return True
    return "/" in s and Path(s.split("/")[0]).is_dir()  # 'data/train' with a local 'data/'


def _read_rows(src) -> tuple[Rows, str, str]:
    s = src.source
    split = _split_name(src)
    n = None if _holdout_of(src) is not None else src.n  # a hold-out divides every row
    if not _looks_local(s):
        return _read_hub(s, split, n), s, f"{s.split('/')[-1]}-{split}"
    path = Path(s).expanduser()
    if not path.exists():
        raise UserError(f"dataset path not found (looked in {Path.cwd()}); check the path",
                        source=s, field="source")
    if path.is_dir():
        return _read_disk(path, split, n)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path), s, path.stem
    if suffix == ".csv":
        return _read_csv(path), s, path.stem
    if suffix == ".parquet":
        return _read_parquet(path), s, path.stem
    raise UserError(f"unknown file type '{suffix or path.name}'; use .jsonl, .csv, .parquet or "
                    "a datasets save_to_disk folder", source=s, field="source")


def _not_utf8(e: UnicodeDecodeError, data: bytes, offset: int, source: str, line: int):
    byte = data[e.start]
    return UserError(f"not UTF-8: byte 0x{byte:02x} at byte offset {offset + e.start}; "
                     "re-save the file as UTF-8", source=source, row=line)


def _read_jsonl(path: Path) -> Rows:
    rows: Rows = []
    offset = 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if len(raw) > MAX_LINE_BYTES:
                raise UserError(f"line {lineno} is {len(raw) / 2**20:.1f} MB long, more than the "
                                f"{MAX_LINE_BYTES >> 20} MB one example may take; JSON Lines "
                                "holds one example per line (split the file, or shorten the "
                                "text)", source=str(path), row=lineno)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(e, raw, offset, str(path), lineno) from None
            offset += len(raw)
            text = text.lstrip("\ufeff") if lineno == 1 else text
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                raise UserError(f"line {lineno} is not valid JSON ({e.msg}, column {e.colno}); "
                                "each line must be one JSON object", source=str(path),
                                row=lineno) from None
            if not isinstance(record, dict):
                raise UserError(f"line {lineno} is a JSON {type(record).__name__}, not an "
                                'object; write one {"prompt": ..., "completion": ...} per line',
                                source=str(path), row=lineno)
            rows.append((lineno, record))
    return rows


def _read_csv(path: Path) -> Rows:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(e, data, 0, str(path), data[: e.start].count(b"\n") + 1) from None
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    try:
        rows = [(reader.line_num, dict(r)) for r in reader]
    except csv.Error as e:
        raise UserError(f"malformed CSV ({e})", source=str(path), row=reader.line_num) from None
    for line, r in rows:
        if None in r:
            raise UserError("the row has more cells than the header has columns",
                            source=str(path), row=line)
    return rows


def _read_parquet(path: Path) -> Rows:
    import pyarrow.parquet as pq

    try:
        records = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise UserError(f"not a readable Parquet file ({e})", source=str(path)) from None
    return list(enumerate(records, 1))


def _head(ds, n: int | None) -> Rows:
    """The first n rows of a `datasets.Dataset`, without materializing the rest."""
    if n is not None and n < len(ds):
        ds = ds.select(range(n))
    return list(enumerate(ds.to_list(), 1))


def _read_disk(path: Path, split: str, n: int | None) -> tuple[Rows, str, str]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise UserError("this folder is not a datasets save_to_disk folder; point at a .jsonl, "
                        ".csv or .parquet file, or save with Dataset.save_to_disk",
                        source=str(path), field="source") from None
    stem = path.name
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise UserError(f"no split '{split}'; available: {', '.join(ds)}",
                            source=str(path), field="split")
        ds, stem = ds[split], f"{path.name}-{split}"
    return _head(ds, n), str(path), stem


def _read_hub(name: str, split: str, n: int | None) -> Rows:
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # offline, unknown id, gated, bad split ...
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise UserError(f"no such local file or folder, and loading it as a Hugging Face hub "
                        f"dataset failed ({reason}); check the path, or the id, split and "
                        "network", source=name, field="source") from None
    return _head(ds, n)


# ---------------------------------------------------------------- raw rows -> Examples

def _resolve_fields(fields: dict[str, str], columns: list[str], origin: str) -> dict[str, str]:
    for key, col in fields.items():
        if key not in FIELDS:
            raise UserError(f"unknown finemem field '{key}'; fields maps one of "
                            f"{', '.join(FIELDS)} to your column", source=origin,
                            field=f"fields.{key}")
        if col not in columns:
            raise UserError(f"column '{col}' (mapped to {key}) is not in the data; columns are: "
                            f"{', '.join(columns)}", source=origin, field=f"fields.{key}")
    fmap = dict(fields)
    for f in FIELDS:
        if f not in fmap and f in columns:
            fmap[f] = f
    chat = "messages" in fields or ("messages" in fmap and not
                                    ("prompt" in fmap and "completion" in fmap))
    for f in ("prompt", "completion") if chat else ("messages",):
        fmap.pop(f, None)  # the unused style's columns go to meta
    return fmap


def _to_examples(rows: Rows, fields: dict[str, str], *, origin: str, stem: str,
                 tokenizer, fmt: str = "auto") -> list[Example]:
    columns = list(dict.fromkeys(k for _, r in rows for k in r))
    fmap = _resolve_fields(fields, columns, origin)
    # (without a tokenizer, as input checks that load no model read data, rows stay plain)
    if fmt == "chat" and tokenizer is not None and not getattr(tokenizer, "chat_template", None):
        raise _no_template(origin)
    required = ("messages",) if "messages" in fmap else ("prompt", "completion")
    used = set(fmap.values())
    seen: dict[str, int] = {}
    out = []
    for index, (rowno, row) in enumerate(rows):
        def err(msg: str, f: str) -> UserError:
            return UserError(msg, source=origin, row=rowno, field=fmap.get(f, f))

        for f in required:
            if _missing(row.get(fmap.get(f, f))):
                hint = "" if f in fmap else " (map your column with fields: {%s: <column>})" % f
                raise err(f"missing required field '{f}'{hint}; this row's columns are: "
                          f"{', '.join(row) or '(none)'}", f)
        chat = False
        if "messages" in fmap:
            prompt, completion, chat = _chat(row[fmap["messages"]], tokenizer, err, fmt)
        else:
            prompt, completion = row[fmap["prompt"]], row[fmap["completion"]]
            for f, v in (("prompt", prompt), ("completion", completion)):
                if not isinstance(v, str):
                    raise err(f"{f} must be a string, got {type(v).__name__} {v!r:.40}", f)
            if fmt == "chat" and completion and tokenizer is not None:
                prompt, completion, chat = _chat(_one_turn(prompt, completion), tokenizer, err,
                                                 fmt)
        if not completion:
            raise err("completion is empty; every example needs text to learn", "completion")
        answer = _scalar(row.get(fmap["answer"]), "answer", err) if "answer" in fmap else None
        ex_id = _scalar(row.get(fmap["id"]), "id", err) if "id" in fmap else None
        ex_id = f"{stem}-{index}" if ex_id is None else ex_id
        if ex_id in seen:
            raise err(f"duplicate id '{ex_id}' (first on row {seen[ex_id]}); ids must be unique",
                      "id")
        seen[ex_id] = rowno
        meta = {k: v for k, v in row.items() if k not in used}
        out.append(Example(prompt=prompt, completion=completion, answer=answer, id=ex_id,
                           meta=meta, chat=chat))
    return out


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _scalar(v: Any, f: str, err) -> str | None:
    """An answer or id as a string: numbers become strings (42.0 -> '42')."""
    if _missing(v):
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise err(f"{f} must be a string or a number, got {type(v).__name__} {v!r:.40}", f)
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _chat(messages: Any, tokenizer, err, fmt: str = "auto") -> tuple[str, str, bool]:
    if not isinstance(messages, list) or len(messages) < 2:
        raise err("messages must be a list of at least two {role, content} messages, the last "
                  "from the assistant", "messages")
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)):
            raise err(f"message {i} must be an object with string 'role' and 'content', got "
                      f"{m!r:.60}", "messages")
    if messages[-1]["role"] != "assistant":
        raise err(f"the last message must be from the assistant (it is from "
                  f"'{messages[-1]['role']}'): it becomes the completion", "messages")
    try:
        return render_chat(messages, tokenizer, plain=fmt == "plain")
    except Exception as e:  # a chat template that rejects this conversation
        raise err(f"the tokenizer's chat template failed on this conversation ({e})",
                  "messages") from None
