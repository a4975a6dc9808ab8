"""Typed errors. Each carries a one-line, user-facing message and an exit code.

InputError (exit 2) is bad input caught at the boundary: nothing was changed.
StoreError (exit 1) is an environment problem (missing store, locked DB...).
"""

from __future__ import annotations


class CtmError(Exception):
    """Base class: message is shown to the user as one line."""

    exit_code = 1

    def __init__(self, message: str, *, where: str | None = None) -> None:
        # Collapse to one line so a hostile value cannot forge extra log/CLI lines;
        # `where` is often a path the user gave: control characters are escaped, and
        # a name thousands of characters long is cut.
        message = " ".join(str(message).split())
        if where is not None:
            where = where.encode("unicode_escape").decode("ascii") if not where.isprintable() else where
            where = where if len(where) <= 300 else where[:300] + "..."
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


class InputError(CtmError):
    """Invalid input (template, manifest, CLI argument). Nothing was changed."""

    exit_code = 2


class ConflictError(InputError):
    """The request conflicts with configured state (duplicate, occupied, in use)."""


class NotFoundError(InputError):
    """The request names something that does not exist."""


class ExhaustedError(InputError):
    """A pool (IP addresses, CTIDs) has no free entries left."""


class StoreError(CtmError):
    """The store cannot be used (missing, locked, newer schema)."""


class RenderError(CtmError):
    """A config template failed to render. Nothing was written."""

    exit_code = 2
