"""User-facing errors.

Anything the user can fix (bad config, bad data, missing files) raises `UserError`. The CLI
prints its message as one line and exits with status 2, without a traceback.
"""


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
