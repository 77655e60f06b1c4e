"""GGUF model files: dequantized once into a cached Hugging Face folder.

Usage:
    folder = convert_gguf("models/SmolLM2-135M-Instruct.Q4_1.gguf")   # first call converts
    model = AutoModelForCausalLM.from_pretrained(folder)               # plain safetensors

`model: path/to/file.gguf` (or a folder holding one .gguf) in a config resolves here. transformers
reads the file (`from_pretrained(folder, gguf_file=name)`, through the `gguf` package) and
dequantizes it to float32; the weights are written as safetensors, with the tokenizer and chat
template the file carries, to `finemem_home()/gguf/<stem>-<sha256[:16]>/`, keyed by the file's
content, so the second run loads the cache. The converted model has no `quantization_config`:
it is an ordinary float32 model that saves, merges and exports like any other.
"""

from __future__ import annotations

import gc
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from finemem.errors import UserError
from finemem.home import finemem_home
from finemem.io import publish_dir

MARKER = "finemem_gguf.json"
PLAIN_TYPES = ("F32", "F16", "BF16")  # stored unquantized; everything else goes through gguf


def find_gguf(spec: str) -> Path | None:
    """The .gguf file `spec` names: the file itself, or the one .gguf in a folder without a
    config.json; None when `spec` is neither."""
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return path
    if path.is_dir() and not (path / "config.json").is_file():
        files = sorted(path.glob("*.gguf"))
        if len(files) > 1:
            raise UserError(f"the folder holds {len(files)} .gguf files "
                            f"({', '.join(f.name for f in files[:4])}); name one as model:",
                            source=spec, field="model")
        return files[0] if files else None
    return None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_dir(path: Path, digest: str | None = None) -> Path:
    digest = digest or file_sha256(path)
    return finemem_home() / "gguf" / f"{Path(path).stem}-{digest[:16]}"


def supported() -> tuple[list[str], list[str]]:
    """(architectures, tensor types) this installation can convert."""
    import gguf.quants
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    archs = [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer")]
    # gguf keeps its dequantizers in a private table; without it, transformers' own error
    # (caught in _convert) names a type it cannot read
    traits = getattr(gguf.quants, "_type_traits", None)
    types = list(PLAIN_TYPES) + sorted(t.name for t in traits) if traits else []
    return archs, types


def inspect_gguf(path: Path) -> dict:
    """Architecture, tensor types and context length of a GGUF file (metadata only);
    `UserError` when transformers cannot convert it."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise UserError("reading .gguf files needs the 'gguf' package: pip install 'gguf>=0.10'",
                        source=str(path), field="model") from None
    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # a truncated or foreign file: several error types
        raise UserError(f"not a readable GGUF file ({str(e).splitlines()[0][:120]})",
                        source=str(path), field="model") from None

    def field(key):
        f = reader.fields.get(key)
        if f is None or not f.data:
            return None
        part = f.parts[f.data[0]]
        return bytes(part).decode("utf-8") if f.types[0].name == "STRING" else part[0].item()

    arch = field("general.architecture")
    types = sorted({t.tensor_type.name for t in reader.tensors})
    archs, ok_types = supported()
    if arch not in archs:
        raise UserError(f"GGUF architecture '{arch}' is not supported; transformers converts: "
                        f"{', '.join(archs)}", source=str(path), field="model")
    bad = [t for t in types if ok_types and t not in ok_types]
    if bad:
        raise UserError(f"GGUF tensor type(s) {', '.join(bad)} cannot be dequantized; "
                        f"supported: {', '.join(ok_types)}", source=str(path), field="model")
    return {"architecture": arch, "tensor_types": types,
            "context_length": field(f"{arch}.context_length")}


def convert_gguf(path: str | Path, *, progress: bool = True) -> Path:
    """The cached HF folder of GGUF file `path`, converting it on first use."""
    path = Path(path).expanduser().resolve()
    digest = file_sha256(path)
    final = cache_dir(path, digest)
    if (final / MARKER).is_file():
        return final
    info = inspect_gguf(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        t0 = time.time()
        if progress:
            print(f"converting {path.name} (dequantizing {', '.join(info['tensor_types'])} "
                  f"to float32) -> {final}", flush=True)
        _convert(path, tmp, progress=progress)
        info.update(source=str(path), sha256=digest, dtype="float32",
                    convert_seconds=round(time.time() - t0, 1))
        (tmp / MARKER).write_text(json.dumps(info, indent=2))
        publish_dir(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _convert(path: Path, out: Path, *, progress: bool = True) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()

    folder, name = str(path.parent), path.name
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except Exception as e:  # noqa: BLE001 - a file transformers cannot read, for any reason
        if isinstance(e, MemoryError):
            raise
        why = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"transformers cannot load this GGUF file ({why})", source=str(path),
                        field="model") from None
    finally:
        if was_on and not progress:
            hf_logging.enable_progress_bar()
    # What marks the model as 'quantized with gguf' (and refuses save_pretrained): the
    # weights are already plain float32 tensors, so dropping the marks is the whole change.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    del model
    gc.collect()
