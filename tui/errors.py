"""How a failure in a worker reads in a notification: one line, never a traceback."""

from __future__ import annotations

from bayling_local.errors import BaylingError


def describe(error: BaseException) -> str:
    if isinstance(error, BaylingError):
        return str(error)
    return f"unexpected {type(error).__name__}: {error}"
