"""Data: the `Example` record, loaders for user files, built-in tasks, duplication."""

from finemem.data.duplication import (apply_duplication, chosen_indices, read_manifest,
                                      write_manifest)
from finemem.data.example import Example
from finemem.data.loaders import load_examples, render_chat

__all__ = ["Example", "load_examples", "render_chat", "apply_duplication", "chosen_indices",
           "write_manifest", "read_manifest"]
