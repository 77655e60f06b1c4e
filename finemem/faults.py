"""Fault injection for the crash-safety tests: die (SIGKILL) or fail at named points.

Usage (in library code, at a point where a crash must be survivable):
    from finemem import faults
    faults.point("ckpt_write")          # free when no fault is asked for

Usage (from a test, through the environment of a `finemem` subprocess):
    FINEMEM_KILL_AT=score:3       SIGKILL this process the 3rd time it passes `score`
    FINEMEM_INT_AT=train_step:2   send SIGINT there instead (a Ctrl-C)
    FINEMEM_FAIL_AT=ckpt_write:1  raise OSError(ENOSPC) there instead (a full disk)
    FINEMEM_FAULT_LOG=/tmp/ev.log append the name of every point passed (one line each,
                                  written unbuffered, so a killed process keeps its log)

The points (grep `faults.point(` for where each sits):
    train_step   after an optimizer step, before its checkpoint (train/loop.py)
    ckpt_write   inside a checkpoint write: weights in the temporary folder, metadata and
                 rename not yet done (train/checkpoint.py)
    state_swap   checkpoint renamed into place, resume state not yet swapped in (train/loop.py)
    store_write  inside a results-store transaction, before its commit (store.py)
    score        a chunk of teacher-forced scores (or attention statistics) computed, not yet
                 stored (engine/cache.py)
    generate     a chunk of generations computed, not yet stored (engine/cache.py)
    probe_done   a probe finished a checkpoint, its done-key not yet stored (audit/loop.py)

The environment is read once, at import; with none of the variables set `point` returns at
once.

Ctrl-C that sticks: the CLI installs `on_sigint`, which raises KeyboardInterrupt like Python's
own handler and also remembers it. Python swallows an exception raised inside a finalizer
(`__del__`, a weakref callback) and prints "Exception ignored"; the command would then run on
and exit 0. With the flag set, the next unit-of-work point (train_step, score, generate,
probe_done) raises KeyboardInterrupt again, so the command still stops where it can resume.
"""

from __future__ import annotations

import errno
import os
import signal

KILL_ENV, INT_ENV, FAIL_ENV = "FINEMEM_KILL_AT", "FINEMEM_INT_AT", "FINEMEM_FAIL_AT"
LOG_ENV = "FINEMEM_FAULT_LOG"


def _parse(spec: str | None) -> dict[str, int]:
    out = {}
    for part in (spec or "").split(","):
        name, _, n = part.strip().partition(":")
        if name:
            out[name] = int(n or 1)
    return out


_KILL = _parse(os.environ.get(KILL_ENV))
_INT = _parse(os.environ.get(INT_ENV))
_FAIL = _parse(os.environ.get(FAIL_ENV))
_LOG = os.environ.get(LOG_ENV)
_ACTIVE = bool(_KILL or _INT or _FAIL or _LOG)
_seen: dict[str, int] = {}
# Points between units of work, where stopping loses at most the unit (never a cleanup path).
STOP_POINTS = frozenset({"train_step", "score", "generate", "probe_done"})
_interrupted = False


def on_sigint(signum, frame) -> None:
    """SIGINT handler: remember the Ctrl-C, then raise KeyboardInterrupt as Python does."""
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def install_sigint() -> None:
    """Use `on_sigint` for Ctrl-C (main thread only, as `signal` requires)."""
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_sigint)


def point(name: str) -> None:
    """Pass the fault point `name`: stop there after a Ctrl-C that was swallowed, log it, and
    die or fail there when the environment asks."""
    if _interrupted and name in STOP_POINTS:
        raise KeyboardInterrupt
    if not _ACTIVE:
        return
    n = _seen[name] = _seen.get(name, 0) + 1
    if _LOG:
        fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{name}\n".encode())
        finally:
            os.close(fd)
    if _KILL.get(name) == n:
        os.kill(os.getpid(), signal.SIGKILL)
    if _INT.get(name) == n:
        os.kill(os.getpid(), signal.SIGINT)  # Python raises KeyboardInterrupt right after
    if _FAIL.get(name) == n:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
