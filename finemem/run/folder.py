"""A run folder: its layout, its config (parsed once per process and file version), its store.

    run = RunFolder(run_dir)
    run.config                     # RunConfig of config.yaml (UserError when there is none)
    with run.open_store() as store: ...
    run.base_hash(store)           # the base model's content hash, stored once in the store

Layout (unchanged since the first run folders; `meta` in the store is the one addition):
    config.yaml         the run's config, written by `finemem train`
    tokenizer/          the tokenizer the run was trained with
    checkpoints/        step-NNNNNN/ folders (finemem.run.checkpoints)
    merges/             checkpoints written by `finemem merge`
    references/<key>/   reference models an attack fine-tuned (each a run folder of its own)
    state/              resume state (finemem.train.checkpoint)
    results.sqlite      the results store (finemem.store)
    dp.json             the DP-SGD settings and epsilon per checkpoint (finemem.run.privacy)
    report/             plots and the HTML report
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from finemem.errors import UserError
from finemem.store import BASE_HASH, CheckpointRow, Store

CONFIG = "config.yaml"
RESULTS = "results.sqlite"
DP = "dp.json"
BASE = "step-000000"  # the name of the base model among a run's checkpoints (step 0)


@lru_cache(maxsize=32)
def _parsed(path: str, mtime_ns: int, size: int):
    from finemem.config import load_config

    return load_config(path)


@lru_cache(maxsize=32)
def _raw(path: str, mtime_ns: int, size: int) -> dict:
    import yaml

    return yaml.safe_load(Path(path).read_text("utf-8")) or {}


class LoadSettings(NamedTuple):
    """What loading a run's models needs from its config."""
    model: str
    trust_remote_code: bool
    allow_pickle: bool


def read_config(path: str | Path):
    """`load_config(path)`, parsed once per file version (path, mtime, size) in this process:
    one command reads a run's config.yaml once however many layers ask for it. The result is
    shared: change it with `model_copy`, never in place."""
    p = Path(path)
    if not p.is_file():
        from finemem.config import load_config

        return load_config(p)  # its UserError: "config file not found"
    st = p.stat()
    return _parsed(str(p.resolve()), st.st_mtime_ns, st.st_size)


class RunFolder:
    """The paths of one run folder and the facts stored in it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # layout ----------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def results_file(self) -> Path:
        return self.path / RESULTS

    @property
    def dp_file(self) -> Path:
        return self.path / DP

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / "tokenizer"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def merges_dir(self) -> Path:
        return self.path / "merges"

    def reference_dir(self, key: str) -> Path:
        """RUN_DIR/references/<key>: a reference model an attack fine-tuned for this run (a
        run folder of its own, with the texts it was trained on), kept so a rerun reuses it."""
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"not a reference key: {key!r}")
        return self.path / "references" / key

    def is_run(self) -> bool:
        """A trained run folder: a config and a results store."""
        return self.config_file.is_file() and self.results_file.is_file()

    def has_results(self) -> bool:
        return self.results_file.is_file()

    def require_results(self) -> None:
        if not self.has_results():
            raise UserError("no results store; run `finemem train` and `finemem audit` first",
                            source=str(self.path))

    # config and store ------------------------------------------------------------------
    @property
    def config(self):
        """The run's RunConfig; UserError naming the folder when it has no config.yaml."""
        if not self.config_file.is_file():
            raise UserError("not a finemem run folder (no config.yaml); train it first with "
                            "`finemem train`", source=str(self.path))
        return read_config(self.config_file)

    def load_settings(self) -> LoadSettings:
        """The model and its loading options, read from config.yaml without validating the
        rest (the engine loads models of folders whose other sections it does not read)."""
        if not self.config_file.is_file():
            self.config  # noqa: B018 (its UserError: not a run folder)
        st = self.config_file.stat()
        raw = _raw(str(self.config_file.resolve()), st.st_mtime_ns, st.st_size)
        return LoadSettings(str(raw.get("model", "builtin:tiny")),
                            bool(raw.get("trust_remote_code", False)),
                            bool(raw.get("allow_pickle", False)))

    def open_store(self) -> Store:
        """The run's results store (created when absent); close it, or use `with`."""
        return Store(self.results_file)

    def base_hash(self, store: Store, base_model: str | None = None) -> str | None:
        """The base model's content hash, read (never written: see `record_base_hash`). With
        `base_model`: the stored hash when it was taken of the same files (path, size, mtime),
        else the files hashed (memoised in FINEMEM_HOME); without it (a reader with no model,
        e.g. the report): the stored hash, or None in a store written before it was stored."""
        import json

        from finemem.run.checkpoints import base_content_hash, base_files_key

        raw = store.get_meta(BASE_HASH)
        stored = json.loads(raw) if raw else None
        if base_model is None:
            return stored["hash"] if stored else None
        if stored and stored["key"] == base_files_key(base_model):
            return stored["hash"]
        return base_content_hash(base_model)

    def record_base_hash(self, store: Store, base_model: str) -> str:
        """Store the base model's content hash once (again when its files changed), so that
        readers without the model find it; returns it."""
        import json

        from finemem.run.checkpoints import base_files_key

        got = self.base_hash(store, base_model)
        raw = store.get_meta(BASE_HASH)
        want = {"key": base_files_key(base_model), "hash": got}
        if raw is None or json.loads(raw) != want:
            store.put_meta(BASE_HASH, json.dumps(want))
        return got

    def checkpoints(self, store: Store, *, merges: bool = True) -> list[CheckpointRow]:
        """The base (step 0, kind "base"), the trained checkpoints registered in the store by
        step, then (with `merges`) those of merges/ (kind "merge") by name. The base's hash is
        None when it was never stored and its folder is gone."""
        from finemem.run.checkpoints import list_checkpoints

        out = [CheckpointRow(BASE, 0, 0.0, None, "base", self._stored_base_hash(store)),
               *store.checkpoints()]
        if merges:
            for c in list_checkpoints(self.merges_dir, "*", by_step=False):
                out.append(CheckpointRow(c["name"], int(c["step"]), float(c.get("epoch", 0.0)),
                                         c["path"], "merge", _meta_hash(c)))
        return out

    def hashes(self, store: Store) -> dict[str, str]:
        """{checkpoint name: content hash} of `checkpoints` (the base when its hash is known)."""
        return {c.name: c.content_hash for c in self.checkpoints(store) if c.content_hash}

    def _stored_base_hash(self, store: Store) -> str | None:
        got = self.base_hash(store)
        if got is not None:
            return got
        # a store written before the base's hash was stored: the base recorded by the first
        # checkpoint, when its folder is still there
        from finemem.run.checkpoints import read_checkpoint_meta

        first = next(iter(store.checkpoints()), None)
        meta = read_checkpoint_meta(first.path) if first and Path(first.path).is_dir() else None
        model = (meta or {}).get("base_model")
        if not model or not Path(model).is_dir():
            return None
        return self.base_hash(store, model)  # read only: a reader writes nothing


def _meta_hash(c: dict) -> str:
    from finemem.run.checkpoints import content_hash, weight_files

    return c.get("content_hash") or content_hash(weight_files(Path(c["path"])))
