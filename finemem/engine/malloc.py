"""Keep freed activation memory in the process while the engine runs on a CPU.

glibc's malloc gives large freed blocks back to the operating system at once (blocks above its
mmap threshold, and the top of the heap above its trim threshold), so every batch of a scoring
pass maps its activations afresh and page-faults them in again: about 900,000 minor page
faults per pass over 8,000 tokens of SmolLM2-135M, about 1 s of its 14 s
(docs/PERFORMANCE.md). Raising both thresholds once keeps those blocks for the next batch.
The peak resident memory does not grow (the same blocks are reused); memory freed after the
peak is kept by the process until it exits. The numbers computed are unchanged.

Only on Linux with glibc; elsewhere (musl, macOS, Windows) nothing is done. PyTorch's CPU
tuning guide makes the same point with jemalloc or tcmalloc preloaded; this needs neither.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_MMAP_BYTES = 32 << 20  # glibc's largest allowed mmap threshold on 64-bit systems
_TRIM_BYTES = 1 << 30
_done: bool | None = None  # None: not tried yet; else whether the thresholds were set


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds, once per process; True when they are set."""
    global _done
    if _done is None:
        _done = _set()
    return _done


def _set() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES) and
                mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES))
