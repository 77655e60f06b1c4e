"""engine.malloc: glibc's thresholds are raised once per process, and scores do not change."""

import importlib
import sys

import numpy as np
import pytest

from finemem.engine import score
from test_engine_helpers import memorized

malloc = importlib.import_module("finemem.engine.malloc")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_thresholds_set_once_and_scores_unchanged(monkeypatch):
    model, _, pairs, _ = memorized()
    monkeypatch.setattr(malloc, "_done", None)
    calls = []
    real = malloc.ctypes.CDLL

    class Spy:
        def __init__(self, name):
            self.lib = real(name)

        def mallopt(self, param, value):
            calls.append((param, value))
            return self.lib.mallopt(param, value)

    monkeypatch.setattr(malloc.ctypes, "CDLL", Spy)
    before = score(model, pairs)  # the first CPU pass sets them
    assert calls == [(-3, 32 << 20), (-1, 1 << 30)]
    after = score(model, pairs)
    assert len(calls) == 2  # once per process
    for a, b in zip(before, after):
        assert np.array_equal(a.logprob, b.logprob) and np.array_equal(a.correct, b.correct)


def test_elsewhere_nothing_is_done(monkeypatch):
    monkeypatch.setattr(malloc, "_done", None)
    monkeypatch.setattr(malloc.sys, "platform", "darwin")
    assert malloc.keep_freed_memory() is False
    monkeypatch.setattr(malloc.sys, "platform", "linux")
    assert malloc.keep_freed_memory() is False  # tried once per process: not again
