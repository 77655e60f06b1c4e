"""`finemem doctor`: versions, device, cache folder, built-in base models and optional features.

    from finemem.doctor import diagnose
    found = diagnose()      # JSON-ready dict; nothing is built, downloaded or written

Every check is read-only and cheap: a base model is "built" when its cache folder exists (the
folder name carries the hash of its build spec), never by building it.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from importlib import metadata

PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "safetensors",
            "tokenizers", "gguf", "pyarrow", "matplotlib", "jinja2", "typer", "rich",
            "pydantic")
# optional feature -> (what it enables, how to get it, how to tell it is there)
OPTIONAL = {
    "browser": ("the report's headless-browser test (tests/test_report.py)",
                "apt-get install -y chromium  (.ci/run does this as root)"),
    "trl": ("FinememCallback with TRL's SFTTrainer", "pip install 'finemem[integrations]'"),
    "tensorboard": ("tracker: report_to=['tensorboard']", "pip install 'finemem[integrations]'"),
    "mlflow": ("tracker: report_to=['mlflow']", "pip install mlflow"),
    "wandb": ("tracker: report_to=['wandb']", "pip install wandb"),
}
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _device() -> dict:
    import torch

    from finemem.models.load import pick_device

    out = {"auto": str(pick_device("auto")), "cuda": torch.cuda.is_available(),
           "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    out["mps"] = bool(mps is not None and mps.is_available())
    return out


def _bases(home) -> dict:
    import hashlib
    import json

    from finemem.models.base import SIZES, build_spec

    out = {}
    for size in SIZES:
        try:
            digest = hashlib.sha256(json.dumps(build_spec(size), sort_keys=True).encode()
                                    ).hexdigest()[:12]
        except Exception as e:  # noqa: BLE001 - a broken task generator must not stop doctor
            out[size] = {"status": f"unknown ({type(e).__name__}: {e})"}
            continue
        folder = home / "base" / f"{size}-{digest}"
        built = (folder / "finemem_base.json").is_file()
        out[size] = {"status": "built" if built else "not built (built on first use, or "
                                                     f"`finemem base build --size {size}`)",
                     "path": str(folder) if built else None}
    return out


def _named() -> dict:
    from finemem.models.named import how_to_get, status

    out = {}
    for row in status():
        if row["folder"]:
            out[row["name"]] = {"status": "installed", "path": row["folder"]}
        elif row["fetched"]:
            out[row["name"]] = {"status": "fetched, converted on first use", "path": None}
        else:
            out[row["name"]] = {"status": f"not installed; {how_to_get(row['name'])}",
                                "path": None}
    return out


def diagnose() -> dict:
    from finemem import __version__
    from finemem.home import finemem_home

    home = finemem_home()
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    have = {"browser": browser, **{k: _version(k) for k in OPTIONAL if k != "browser"}}
    missing = {k: {"for": what, "install": how} for k, (what, how) in OPTIONAL.items()
               if not have[k]}
    return {"finemem": __version__, "python": sys.version.split()[0],
            "platform": platform.platform(),
            "packages": {p: _version(p) for p in PACKAGES},
            "device": _device(),
            "cache": {"path": str(home), "writable": os.access(home, os.W_OK),
                      "env": "FINEMEM_HOME" if os.environ.get("FINEMEM_HOME") else "default"},
            "builtin_models": _bases(home),
            "named_models": _named(),
            "optional": {k: v for k, v in have.items() if v},
            "missing": missing}


def render(found: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    con.print(f"[bold]finemem {found['finemem']}[/] on Python {found['python']} "
              f"({found['platform']})")
    t = Table(show_header=False, box=None)
    for k, v in found["packages"].items():
        t.add_row(k, v or "[red]missing[/]")
    con.print(t)
    d = found["device"]
    gpus = f" ({', '.join(d['gpus'])})" if d.get("gpus") else ""
    con.print(f"device: audits and training use [bold]{d['auto']}[/]{gpus}; "
              f"{d['cpu_threads']} CPU threads")
    c = found["cache"]
    where = "from $FINEMEM_HOME" if c["env"] == "FINEMEM_HOME" else "set $FINEMEM_HOME to move it"
    con.print(f"cache folder: {c['path']} ({'writable' if c['writable'] else 'NOT writable'}; "
              f"{where})")
    for size, info in found["builtin_models"].items():
        where = f" ({info['path']})" if info.get("path") else ""
        con.print(f"  builtin:{size}: {info['status']}{where}", highlight=False)
    for name, info in found.get("named_models", {}).items():
        where = f" ({info['path']})" if info.get("path") else ""
        con.print(f"  {name}: {info['status']}{where}", highlight=False)
    for k, v in found["optional"].items():
        con.print(f"[green]ok[/] {k}: {v}")
    for k, v in found["missing"].items():
        con.print(f"[yellow]missing[/] {k}: needed for {v['for']}; {v['install']}",
                  highlight=False)
