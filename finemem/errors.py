"""User-facing errors.

Anything the user can fix (bad config, bad data, missing files) raises `UserError`. The CLI
prints its message as one line and exits with status 2, without a traceback.

A name looked up in a registry (metric, task, probe, experiment) that is not there raises
`unknown_name(kind, name, available)`: "Unknown metric 'x'. Did you mean: y? Available: ...".
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A problem with the user's input. The message names the file, row and field."""

    def __init__(self, message: str, *, source: str | None = None, row: int | None = None,
                 field: str | None = None):
        where = []
        if source is not None:
            where.append(str(source))
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        self.message = message
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class Interrupted(BaseException):
    """The user stopped a command (Ctrl-C) at a point it resumes from; the message says where
    and how. The CLI prints it as one line and exits 130. A BaseException, like the
    KeyboardInterrupt it stands for, so that `except Exception` does not swallow it."""


def unknown_name(kind: str, name: str, available: Iterable[str], field: str | None = None
                 ) -> UserError:
    """The `UserError` for a name that is not among `available` (raise it):
    "Unknown <kind> '<name>'. Did you mean: <closest>? Available: <sorted names>", the hint
    only when difflib finds a close match."""
    names = sorted(available)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean: {close[0]}?" if close else ""
    return UserError(f"Unknown {kind} '{name}'.{hint} Available: {', '.join(names)}",
                     field=field)
