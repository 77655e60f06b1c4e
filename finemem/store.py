"""The results store of a run: one SQLite file in WAL mode that survives a crash.

Usage:
    store = Store(run_dir / "results.sqlite")
    store.log_train(step=10, epoch=0.5, loss=1.23, lr=1e-4)
    store.put_metric("epoch-3", "test", "accuracy", 0.91, n=300, lo=0.87, hi=0.94)

Every write is its own transaction, so a killed process loses at most the row in flight.
Tables:
    runs(run_id, config_json, created, status)
    checkpoints(name, step, epoch, path, kind, content_hash, created)
    train_log(step, epoch, loss, lr, time)
    metrics(checkpoint, split, name, setting, value, n, lo, hi)
    example_results(ckpt_hash, example_id, setting, kind, data)   # per-example rows / cache
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

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

    def checkpoints(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT name, step, epoch, path, kind, content_hash FROM "
                              "checkpoints ORDER BY step")
        keys = ("name", "step", "epoch", "path", "kind", "content_hash")
        return [dict(zip(keys, row)) for row in cur]

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

    def train_log(self) -> list[tuple[int, float, float, float]]:
        return list(self.db.execute("SELECT step, epoch, loss, lr FROM train_log ORDER BY step"))

    # metrics ----------------------------------------------------------------------------
    def put_metric(self, checkpoint: str, split: str, name: str, value: float, *,
                   n: int | None = None, lo: float | None = None, hi: float | None = None,
                   setting: str = "") -> None:
        self.db.execute("INSERT OR REPLACE INTO metrics VALUES (?,?,?,?,?,?,?,?)",
                        (checkpoint, split, name, setting, float(value), n, lo, hi))

    def metrics(self, *, checkpoint: str | None = None, split: str | None = None,
                name: str | None = None) -> list[dict[str, Any]]:
        q, args = "SELECT checkpoint, split, name, setting, value, n, lo, hi FROM metrics", []
        conds = []
        for col, val in (("checkpoint", checkpoint), ("split", split), ("name", name)):
            if val is not None:
                conds.append(f"{col}=?")
                args.append(val)
        if conds:
            q += " WHERE " + " AND ".join(conds)
        keys = ("checkpoint", "split", "name", "setting", "value", "n", "lo", "hi")
        return [dict(zip(keys, row)) for row in self.db.execute(q, args)]

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
