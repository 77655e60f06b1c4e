"""The results store of a run: one SQLite file in WAL mode that survives a crash. The only
module that runs SQL; `finemem.run.RunFolder` is the only one that says where the file is.

Usage:
    store = RunFolder(run_dir).open_store()
    store.log_train(step=10, epoch=0.5, loss=1.23, lr=1e-4)
    store.put_metric("epoch-3", "test", "accuracy", 0.91, n=300, lo=0.87, hi=0.94)
    store.metrics(split="test")[0].value          # MetricRow records (also readable as r["value"])
    store.put_values(chash, "train", "mean_nll", ids, values)    # per-example values
    store.get_values(chash, "train", "mean_nll")                  # {example id: value}
    store.generations(chash)                      # {example id: [GenerationRecord]}

Every write is its own transaction, so a killed process loses at most the row in flight.
Tables (the layout of every run folder since the first; `meta` was added and is created by
its first write, so reading an older store changes nothing in it):
    runs(run_id, config_json, created, status)
    checkpoints(name, step, epoch, path, kind, content_hash, created)
    train_log(step, epoch, loss, lr, time)
    metrics(checkpoint, split, name, setting, value, n, lo, hi)
    example_results(ckpt_hash, example_id, setting, kind, data)   # per-example rows / cache
    meta(key, value)                                              # e.g. the base's content hash

Per-example values (kind "value") are keyed "split/name", then "|" and the settings JSON when
there are settings (`value_key`); generations (kind "gen") are JSON {"crc", "gens": [[token_ids,
text, finish_reason, first_token_entropy, seed], ...]} (`encode_generations`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np

from finemem import faults

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, config_json TEXT, created REAL,
                                 status TEXT);
CREATE TABLE IF NOT EXISTS checkpoints (name TEXT PRIMARY KEY, step INTEGER, epoch REAL,
                                        path TEXT, kind TEXT, content_hash TEXT, created REAL);
CREATE TABLE IF NOT EXISTS train_log (step INTEGER PRIMARY KEY, epoch REAL, loss REAL, lr REAL,
                                      time REAL);
CREATE TABLE IF NOT EXISTS metrics (checkpoint TEXT, split TEXT, name TEXT, setting TEXT,
                                    value REAL, n INTEGER, lo REAL, hi REAL,
                                    PRIMARY KEY (checkpoint, split, name, setting));
CREATE TABLE IF NOT EXISTS example_results (ckpt_hash TEXT, example_id TEXT, setting TEXT,
                                            kind TEXT, data BLOB,
                                            PRIMARY KEY (ckpt_hash, example_id, setting, kind));
CREATE TABLE IF NOT EXISTS audits (started REAL, probes TEXT, selection TEXT, checkpoints TEXT,
                                   settings TEXT);
"""
META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)"
BASE_HASH = "base_content_hash"  # meta key: the base model's content hash, stored once


def setting_key(**settings) -> str:
    """Settings stored beside a metric value: canonical JSON, '' for none.

    >>> setting_key(k=8, first_line=False)
    '{"first_line": false, "k": 8}'
    """
    return json.dumps(settings, sort_keys=True) if settings else ""


def parse_setting(setting: str) -> dict:
    """The settings stored beside a metric value (JSON), {} for none.

    >>> parse_setting('{"k": 8}'), parse_setting("")
    ({'k': 8}, {})
    """
    if not setting:
        return {}
    try:
        out = json.loads(setting)
    except ValueError:
        return {"key": setting}
    return out if isinstance(out, dict) else {"key": setting}


def value_key(split: str, name: str, settings: dict | None = None) -> str:
    """The store key of per-example values: "split/name", "|settings JSON" when there are any.

    >>> value_key("test", "mean_nll", {"k": 1})
    'test/mean_nll|{"k": 1}'
    """
    return f"{split}/{name}" + (f"|{setting_key(**settings)}" if settings else "")


def split_value_key(key: str) -> tuple[str, str, str]:
    """(split, name, settings JSON) of a `value_key`.

    >>> split_value_key('test/mean_nll|{"k": 1}')
    ('test', 'mean_nll', '{"k": 1}')
    """
    head, _, settings = key.partition("|")
    split, _, name = head.partition("/")
    return split, name, settings


class _Record:
    """Read-only mapping access (`row["value"]`, `dict(row)`) for callers that read rows as
    dicts; new code reads the attributes."""

    def __getitem__(self, key: str):
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def keys(self):
        return [f for f in self.__dataclass_fields__]

    def get(self, key: str, default=None):
        return getattr(self, key, default)


@dataclass(frozen=True)
class MetricRow(_Record):
    """One stored metric of one checkpoint; `setting` is the settings JSON ('' for none)."""
    checkpoint: str
    split: str
    name: str
    setting: str
    value: float
    n: int | None
    lo: float | None
    hi: float | None

    @property
    def settings(self) -> dict:
        return parse_setting(self.setting)

    @property
    def key(self) -> str:
        return f"{self.split}/{self.name}"

    def as_dict(self) -> dict:
        """The row with its parsed `settings` and `key` (what tables and summaries hold)."""
        return {**asdict(self), "settings": self.settings, "key": self.key}


@dataclass(frozen=True)
class CheckpointRow(_Record):
    """A trained checkpoint registered in the store (the base is not one: see `base_hash`)."""
    name: str
    step: int
    epoch: float
    path: str | None  # None for the base
    kind: str
    content_hash: str


class TrainRow(NamedTuple):
    step: int
    epoch: float
    loss: float
    lr: float


@dataclass(frozen=True)
class ValueRow(_Record):
    """One stored per-example value: a number, or a text (e.g. a generation)."""
    content_hash: str
    example_id: str
    split: str
    name: str
    settings: str  # JSON, '' for none
    value: Any


class GenerationRecord(NamedTuple):
    """One stored continuation (the fields of `finemem.engine.Generation`)."""
    token_ids: list
    text: str
    finish_reason: str
    first_token_entropy: float
    seed: int | None


def encode_generations(crc: int, gens) -> str:
    """The stored form of one example's continuations (objects with GenerationRecord's
    fields)."""
    return json.dumps({"crc": crc, "gens": [[g.token_ids, g.text, g.finish_reason,
                                               g.first_token_entropy, g.seed] for g in gens]})


def decode_generations(blob: str | bytes) -> tuple[int, list[GenerationRecord]]:
    """(crc, continuations) of a stored generation row; ValueError when it is not one."""
    try:
        row = json.loads(blob)
        return row["crc"], [GenerationRecord(*g) for g in row["gens"]]
    except (KeyError, TypeError) as e:
        raise ValueError(f"not a finemem generation row: {e}") from None


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        # Switching a new file to WAL takes an exclusive lock that SQLite's busy timeout does
        # not wait for: processes opening the same new store at once (DDP ranks, audit
        # workers) retry instead of failing with "database is locked".
        for attempt in range(600):
            try:
                if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.executescript(SCHEMA)
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or attempt == 599:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # runs -------------------------------------------------------------------------------
    def put_run(self, run_id: str, config: dict, status: str = "running") -> None:
        self.db.execute("INSERT INTO runs VALUES (?,?,?,?) ON CONFLICT(run_id) DO UPDATE SET "
                        "config_json=excluded.config_json, status=excluded.status",
                        (run_id, json.dumps(config), time.time(), status))

    def set_status(self, run_id: str, status: str) -> None:
        self.db.execute("UPDATE runs SET status=? WHERE run_id=?", (status, run_id))

    # checkpoints ------------------------------------------------------------------------
    def add_checkpoint(self, name: str, *, step: int, epoch: float, path: str, kind: str,
                       content_hash: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO checkpoints VALUES (?,?,?,?,?,?,?)",
                        (name, step, epoch, path, kind, content_hash, time.time()))

    def checkpoints(self) -> list[CheckpointRow]:
        cur = self.db.execute("SELECT name, step, epoch, path, kind, content_hash FROM "
                              "checkpoints ORDER BY step")
        return [CheckpointRow(*row) for row in cur]

    # run facts --------------------------------------------------------------------------
    def put_meta(self, key: str, value: str) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(META)
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        except sqlite3.OperationalError:  # a store written before the table: no facts yet
            return None
        return row[0] if row else None

    # audits -----------------------------------------------------------------------------
    def add_audit(self, *, probes: list[str], selection: str, checkpoints: list[str],
                  settings: dict) -> None:
        """Record one `finemem audit`: its probes, the --checkpoints asked for, the checkpoints
        it covered and the settings its probes resolved."""
        self.db.execute("INSERT INTO audits VALUES (?,?,?,?,?)",
                        (time.time(), json.dumps(probes), selection, json.dumps(checkpoints),
                         json.dumps(settings, sort_keys=True)))

    def audits(self) -> list[dict[str, Any]]:
        """Every recorded audit, oldest first."""
        cur = self.db.execute("SELECT started, probes, selection, checkpoints, settings FROM "
                              "audits ORDER BY started")
        return [{"started": t, "probes": json.loads(p), "selection": sel,
                 "checkpoints": json.loads(c), "settings": json.loads(st)}
                for t, p, sel, c, st in cur]

    # training log -----------------------------------------------------------------------
    def log_train(self, *, step: int, epoch: float, loss: float, lr: float) -> None:
        self.db.execute("INSERT OR REPLACE INTO train_log VALUES (?,?,?,?,?)",
                        (step, epoch, loss, lr, time.time()))

    def log_train_many(self, rows: Iterable[tuple[int, float, float, float]]) -> None:
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO train_log VALUES (?,?,?,?,?)",
                                [(s, e, l, lr, now) for s, e, l, lr in rows])
            faults.point("store_write")  # a kill here: the transaction rolls back

    def train_time_span(self) -> tuple[float | None, float | None, int]:
        """(time of the first logged step, of the last, number of logged steps)."""
        lo, hi, n = self.db.execute("SELECT min(time), max(time), count(*) FROM "
                                    "train_log").fetchone()
        return lo, hi, int(n or 0)

    def train_log(self) -> list[TrainRow]:
        return [TrainRow(*r) for r in
                self.db.execute("SELECT step, epoch, loss, lr FROM train_log ORDER BY step")]

    # metrics ----------------------------------------------------------------------------
    def put_metric(self, checkpoint: str, split: str, name: str, value: float, *,
                   n: int | None = None, lo: float | None = None, hi: float | None = None,
                   setting: str = "") -> None:
        self.db.execute("INSERT OR REPLACE INTO metrics VALUES (?,?,?,?,?,?,?,?)",
                        (checkpoint, split, name, setting, float(value), n, lo, hi))

    def metrics(self, *, checkpoint: str | None = None, split: str | None = None,
                name: str | None = None) -> list[MetricRow]:
        q, args = "SELECT checkpoint, split, name, setting, value, n, lo, hi FROM metrics", []
        conds = []
        for col, val in (("checkpoint", checkpoint), ("split", split), ("name", name)):
            if val is not None:
                conds.append(f"{col}=?")
                args.append(val)
        if conds:
            q += " WHERE " + " AND ".join(conds)
        return [MetricRow(*row) for row in self.db.execute(q, args)]

    def has_metric(self, checkpoint: str, split: str, name: str, setting: str = "") -> bool:
        row = self.db.execute("SELECT 1 FROM metrics WHERE checkpoint=? AND split=? AND name=? "
                              "AND setting=?", (checkpoint, split, name, setting)).fetchone()
        return row is not None

    # per-example rows (also the engine's score cache) ----------------------------------
    def put_examples(self, rows: Iterable[tuple[str, str, str, str, bytes | str]]) -> None:
        """rows: (ckpt_hash, example_id, setting, kind, data), written in one transaction."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO example_results VALUES (?,?,?,?,?)",
                                list(rows))
            faults.point("store_write")

    def get_examples(self, ckpt_hash: str, setting: str, kind: str,
                     example_ids: list[str] | None = None) -> dict[str, bytes | str]:
        if example_ids is None:
            cur = self.db.execute("SELECT example_id, data FROM example_results WHERE "
                                  "ckpt_hash=? AND setting=? AND kind=?",
                                  (ckpt_hash, setting, kind))
            return dict(cur.fetchall())
        out: dict[str, bytes | str] = {}
        for i in range(0, len(example_ids), 500):
            chunk = example_ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            cur = self.db.execute(f"SELECT example_id, data FROM example_results WHERE "
                                  f"ckpt_hash=? AND setting=? AND kind=? AND example_id IN "
                                  f"({marks})", (ckpt_hash, setting, kind, *chunk))
            out.update(cur.fetchall())
        return out

    # per-example values ----------------------------------------------------------------
    def put_values(self, ckpt_hash: str, split: str, name: str, ids: Iterable[str], values,
                   settings: dict | None = None) -> None:
        """One JSON value per example (a number or a text) under `value_key(split, name)`."""
        key = value_key(split, name, settings)
        self.put_examples((ckpt_hash, str(i), key, "value", json.dumps(v))
                          for i, v in zip(ids, values))

    def get_values(self, ckpt_hash: str, split: str, name: str, settings: dict | None = None,
                   ids: list[str] | None = None) -> dict[str, Any]:
        """{example id: value} stored by `put_values` ({} when none)."""
        rows = self.get_examples(ckpt_hash, value_key(split, name, settings), "value", ids)
        return {i: json.loads(v) for i, v in rows.items()}

    def has_values(self, split: str, name: str) -> bool:
        """Whether any checkpoint has per-example values under split/name (any settings)."""
        key = value_key(split, name)
        row = self.db.execute("SELECT 1 FROM example_results WHERE kind='value' AND (setting=? "
                              "OR setting LIKE ?) LIMIT 1", (key, key + "|%")).fetchone()
        return row is not None

    def value_rows(self) -> list[ValueRow]:
        """Every stored per-example value, by checkpoint hash, key and example id."""
        cur = self.db.execute("SELECT ckpt_hash, example_id, setting, data FROM example_results "
                              "WHERE kind='value' ORDER BY ckpt_hash, setting, example_id")
        return [ValueRow(chash, eid, *split_value_key(key), json.loads(data))
                for chash, eid, key, data in cur]

    def generations(self, ckpt_hash: str) -> dict[str, list[list[GenerationRecord]]]:
        """{example id: [continuations of each cached generation setting]} of a checkpoint."""
        out: dict[str, list[list[GenerationRecord]]] = {}
        cur = self.db.execute("SELECT example_id, data FROM example_results WHERE "
                              "ckpt_hash=? AND kind='gen'", (ckpt_hash,))
        for eid, blob in cur:
            out.setdefault(eid, []).append(decode_generations(blob)[1])
        return out

    # vectors (e.g. sentence embeddings, keyed by a space and a text hash) ------------------
    def put_vectors(self, space: str, items: Iterable[tuple[str, Any]]) -> None:
        self.put_examples((space, key, "embedding", "vec",
                           np.asarray(v, dtype=np.float32).tobytes()) for key, v in items)

    def get_vectors(self, space: str, keys: list[str]) -> dict[str, Any]:
        return {k: np.frombuffer(v, dtype=np.float32)
                for k, v in self.get_examples(space, "embedding", "vec", keys).items()}
