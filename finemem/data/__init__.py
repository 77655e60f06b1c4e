"""Data: the `Example` record, loaders for user files, built-in tasks, duplication."""

from finemem.data.example import Example

__all__ = ["Example"]
