"""Write one benchmark's section of docs/PERFORMANCE.md, leaving the other sections alone.

Each benchmark owns the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parents[1] / "docs" / "PERFORMANCE.md"
HEADER = ("# Performance\n\nEvery figure is a ratio measured in one run: finemem against the "
          "naive way, on the same model and data. Each section gives the command that "
          "reproduces it.\n")


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
            f"threads, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")


def write_section(name: str, markdown: str) -> None:
    from finemem.io import write_doc_section

    write_doc_section(DOC, f"bench:{name}", markdown, header=HEADER)


def best(fn, repeat: int):
    """(result of the last call, best wall time over `repeat` calls)."""
    times, res = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t0)
    return res, min(times)
