"""Exports of a run: its stored results as tables, and any checkpoint as a standalone model.

    export_results(run_dir, "csv")          # RUN_DIR/export/metrics.csv + examples.csv
    export_results(run_dir, "parquet")      # RUN_DIR/export/metrics.parquet + examples.parquet
    export_results(run_dir, "json")         # RUN_DIR/export/finemem_export.json
    read_export(run_dir / "export", "csv")  # -> {"metrics": [...], "examples": [...]} (round trip)
    export_model(ckpt_dir, out_dir)         # a Hugging Face model folder anyone can load

Tables (one row per stored value; the same columns in every format):

    metrics:  checkpoint, step, epoch, split, name, settings, value, n, lo, hi
    examples: checkpoint, step, content_hash, split, name, settings, example_id, value, text

`name` is the metric registry name (docs/METRICS.md), `settings` the JSON of the options it
was computed with ("" for none), n the sample size and [lo, hi] its 95% interval (empty when
the metric has none). `examples` holds the per-example values probes store (e.g. each training
example's mean NLL per checkpoint: `value`; or a text such as the extraction probe's generation,
true suffix or category: `text`, with `value` empty); `checkpoint` is empty for a row whose
weights are not in the run any more (its `content_hash` still says which).

JSON schema (`finemem_export.json`; version 1; a reader checks `schema` and `version`):

    {"schema": "finemem.export", "version": 1, "finemem": "<version>",
     "run": {"run_dir": str, "model": str, "method": str},
     "checkpoints": [{"name", "step", "epoch", "kind", "content_hash"}],
     "metrics": [<metrics row>], "examples": [<examples row>]}

Every file is written atomically (`finemem.io`), and an output path must stay inside the run
folder (a `..` that leads out of it is refused).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

from finemem.errors import UserError
from finemem.io import atomic_file, inside, write_text_atomic  # noqa: F401 (inside: re-exported)

SCHEMA = "finemem.export"
VERSION = 1
FORMATS = ("csv", "parquet", "json")
METRIC_COLUMNS = ("checkpoint", "step", "epoch", "split", "name", "settings", "value", "n", "lo",
                  "hi")
EXAMPLE_COLUMNS = ("checkpoint", "step", "content_hash", "split", "name", "settings",
                   "example_id", "value", "text")


# results ----------------------------------------------------------------------------------
def collect(run_dir: str | Path) -> dict:
    """The run's stored results as {"run", "checkpoints", "metrics", "examples"} (JSON-ready)."""
    from finemem.report.sections._common import RunData

    run = RunData.open(run_dir)
    try:
        cfg = run.config
        ckpts = []
        for c in run.checkpoints:
            ckpts.append({"name": c.name, "step": c.step, "epoch": c.epoch, "kind": c.kind,
                          "content_hash": c.content_hash})
        by_name = {c["name"]: c for c in ckpts}
        by_hash = {c["content_hash"]: c for c in ckpts if c["content_hash"]}
        metrics = []
        for r in sorted(run.metric_rows(), key=lambda r: (by_name.get(r["checkpoint"], {})
                                                          .get("step", 1 << 30),
                                                          r["checkpoint"], r["split"],
                                                          r["name"], r["setting"])):
            c = by_name.get(r["checkpoint"], {})
            metrics.append({"checkpoint": r["checkpoint"], "step": c.get("step"),
                            "epoch": c.get("epoch"), "split": r["split"], "name": r["name"],
                            "settings": r["setting"], "value": r["value"], "n": r["n"],
                            "lo": r["lo"], "hi": r["hi"]})
        examples = []
        for r in run.store.value_rows():
            c = by_hash.get(r.content_hash, {})
            v = r.value
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            examples.append({"checkpoint": c.get("name"), "step": c.get("step"),
                             "content_hash": r.content_hash, "split": r.split, "name": r.name,
                             "settings": r.settings, "example_id": r.example_id,
                             "value": float(v) if num else None,
                             "text": None if num else v if isinstance(v, str) else
                             json.dumps(v)})
        examples.sort(key=lambda r: (r["step"] if r["step"] is not None else 1 << 30,
                                     r["content_hash"], r["split"], r["name"], r["settings"],
                                     r["example_id"]))
        return {"run": {"run_dir": str(run.run_dir.resolve()),
                        "model": getattr(cfg, "model", None),
                        "method": cfg.training.method if cfg else None},
                "checkpoints": ckpts, "metrics": metrics, "examples": examples}
    finally:
        run.close()


def export_results(run_dir: str | Path, fmt: str, *, out: str | Path = "export") -> list[Path]:
    """Write the run's metrics and per-example rows in `fmt` into the folder `out` (inside
    the run folder); returns the files written."""
    from finemem import __version__

    if fmt not in FORMATS:
        raise UserError(f"unknown format '{fmt}'; formats: {', '.join(FORMATS)}",
                        field="--format")
    run_dir = Path(run_dir)
    folder = inside(run_dir, out)
    data = collect(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        path = folder / "finemem_export.json"
        write_text_atomic(path, json.dumps({"schema": SCHEMA, "version": VERSION,
                                            "finemem": __version__, **data}, indent=1,
                                           allow_nan=True))
        return [path]
    written = []
    for table, cols in (("metrics", METRIC_COLUMNS), ("examples", EXAMPLE_COLUMNS)):
        path = folder / f"{table}.{fmt}"
        _write_table(path, fmt, data[table], cols)
        written.append(path)
    return written


def _TYPES() -> dict:
    import pyarrow as pa

    num = {"step": pa.int64(), "n": pa.int64(), "epoch": pa.float64(), "value": pa.float64(),
           "lo": pa.float64(), "hi": pa.float64()}
    return {c: num.get(c, pa.string()) for c in set(METRIC_COLUMNS) | set(EXAMPLE_COLUMNS)}


def _write_table(path: Path, fmt: str, rows: list[dict], cols: tuple) -> None:
    import pyarrow as pa

    schema = pa.schema([(c, _TYPES()[c]) for c in cols])
    table = pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in rows], schema=schema)
    with atomic_file(path) as tmp:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        else:
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, tmp)


def read_export(path: str | Path, fmt: str) -> dict:
    """Read an export back: {"metrics": [...], "examples": [...]} with the exported types
    (for json also the rest of the document, after checking its schema and version)."""
    path = Path(path)
    if fmt == "json":
        f = path if path.is_file() else path / "finemem_export.json"
        doc = json.loads(f.read_text("utf-8"))
        if doc.get("schema") != SCHEMA or not isinstance(doc.get("version"), int):
            raise UserError("not a finemem export (schema/version missing)", source=str(f))
        if doc["version"] > VERSION:
            raise UserError(f"export version {doc['version']} is newer than this finemem "
                            f"reads ({VERSION}); upgrade finemem", source=str(f))
        return doc
    out = {}
    for table, cols in (("metrics", METRIC_COLUMNS), ("examples", EXAMPLE_COLUMNS)):
        f = path / f"{table}.{fmt}"
        if fmt == "parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(f).to_pylist()
        else:
            import pyarrow.csv as pcsv

            opts = pcsv.ConvertOptions(column_types={c: t for c, t in _TYPES().items()
                                                     if c in cols},
                                       strings_can_be_null=True, quoted_strings_can_be_null=False)
            rows = pcsv.read_csv(f, convert_options=opts).to_pylist()
        out[table] = [_clean(r) for r in rows]
    return out


def _clean(row: dict) -> dict:
    # CSV writes an empty quoted string for "" and nothing for None; floats stay floats
    return {k: (None if isinstance(v, float) and math.isnan(v) and k in ("lo", "hi", "epoch")
                else v) for k, v in row.items()}


# models -----------------------------------------------------------------------------------
def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder (holding finemem_ckpt.json); a run folder means the checkpoint its
    audit recommends shipping."""
    from finemem.run import RunFolder
    from finemem.run.checkpoints import read_checkpoint_meta

    path = Path(path)
    if read_checkpoint_meta(path) is not None:
        return path
    if RunFolder(path).is_run():
        from finemem.analysis.summary import summarize

        name = summarize(path).recommendation.name
        for sub in ("checkpoints", "merges"):
            if read_checkpoint_meta(path / sub / name) is not None:
                return path / sub / name
        raise UserError(f"the recommended checkpoint {name} is the base model; there is "
                        "nothing fine-tuned to export", source=str(path))
    raise UserError("not a finemem checkpoint folder (no finemem_ckpt.json) nor an audited "
                    "run folder", source=str(path))


def load_checkpoint_model(ckpt: Path, *, device: str = "cpu", dtype: str = "auto"):
    """The model of one checkpoint as a plain transformers model: full weights as saved, a
    LoRA adapter merged into its base, or a head swapped into its base with the head untied
    from the input embeddings (so a tied-embedding model such as GPT-2 keeps its inputs)."""
    import torch
    from safetensors.torch import load_file

    from finemem.models.load import load_model, peft_quiet, untie_head
    from finemem.run.checkpoints import HEAD_KEY, read_checkpoint_meta

    meta = read_checkpoint_meta(ckpt)
    kind, base = meta["kind"], str(meta.get("base_model", ""))
    if kind == "full":
        return load_model(str(ckpt), device=device, dtype=dtype)
    if not base or (base.startswith(("/", ".", "~")) and not Path(base).exists()):
        raise UserError(f"the base model of this {kind} checkpoint is gone ({base}); rebuild or "
                        "restore it first", source=str(ckpt))
    model = load_model(base, device=device, dtype=dtype)
    if kind == "lora":
        from peft import PeftModel

        with peft_quiet():
            return PeftModel.from_pretrained(model, str(ckpt)).merge_and_unload()
    if kind == "head":
        untie_head(model)
        w = load_file(str(ckpt / "head.safetensors"))[HEAD_KEY]
        with torch.no_grad():
            model.get_output_embeddings().weight.copy_(w)
        return model
    raise UserError(f"unknown checkpoint kind '{kind}'", source=str(ckpt))


def export_model(checkpoint: str | Path, out_dir: str | Path, *, force: bool = False,
                 dtype: str = "auto") -> Path:
    """Write a standalone Hugging Face model folder (safetensors weights, config, tokenizer)
    for a checkpoint, loadable with `AutoModelForCausalLM.from_pretrained(out_dir)` and
    `AutoTokenizer.from_pretrained(out_dir)`. Written to a temporary folder beside `out_dir`
    and renamed into place, so `out_dir` is complete or absent."""
    from finemem.models.load import load_tokenizer
    from finemem.run.checkpoints import read_checkpoint_meta
    from finemem.models.load import quiet_hf

    ckpt = resolve_checkpoint(checkpoint)
    meta = read_checkpoint_meta(ckpt)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise UserError("output folder exists and is not empty; pick another or pass --force",
                        source=str(out_dir))
    run_dir = ckpt.resolve().parent.parent
    tok_dir = run_dir / "tokenizer"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        with quiet_hf():
            model = load_checkpoint_model(ckpt, dtype=dtype)
            model.save_pretrained(tmp, safe_serialization=True)
            if tok_dir.is_dir():
                load_tokenizer(str(tok_dir)).save_pretrained(tmp)
        from finemem import __version__
        from finemem.io import write_json_atomic

        write_json_atomic(tmp / "finemem_source.json",
                          {"finemem": __version__, "source": str(ckpt.resolve()),
                           "kind": meta["kind"], "step": meta.get("step"),
                           "content_hash": meta.get("content_hash"),
                           "base_model": meta.get("base_model")})
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.replace(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
