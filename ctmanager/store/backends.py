"""Which backend a locator picks, and the making and unmaking of a store there.

`--store` / $CTMANAGER_STORE is a file path (SQLite: `sqlite.py`) or a
`postgresql://` URL (PostgreSQL: `pg.py`). `db.py` is the interface both backends
implement and imports neither of them; this module chooses between them. The
PostgreSQL driver is imported only when a URL asks for it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..errors import StoreError
from .db import BUSY_TIMEOUT_MS, Locator, Store, is_url, parse_locator, redact
from .sqlite import SqliteStore  # also registers the in-memory store (Store.memory)


def open_store(locator: Locator, *, create: bool = False, busy_timeout_ms: int = BUSY_TIMEOUT_MS,
               read_only: bool | None = None, schema_check: bool = True) -> Store:
    """`create`: a store that does not exist yet (a new file, an empty database)
    is made one, at this code's schema version; without it that is refused and
    nothing is written. `read_only`: True opens it so and writes nothing; None (the
    default) does so when this user may not write the SQLite file, so read-only
    commands work for them, and a command that changes the store says it is
    read-only in one line. `schema_check`: a store of a schema this code may not use
    is refused in one line (store/versions.py); only `store version`, `store
    migrate` and `store backup` open one without it."""
    if isinstance(locator, str):  # text from a config, a state file, an argument: checked once
        locator = parse_locator(locator, "store")
    if is_url(locator):
        from .pg import PgStore
        return PgStore(str(locator), busy_timeout_ms=busy_timeout_ms, create=create, read_only=bool(read_only),
                       schema_check=schema_check)
    path = Path(locator)
    if not create and not path.exists():
        raise StoreError(f"no store at {redact(path)}; create one with: ctmanager --store {redact(path)} init TEMPLATE")
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {redact(path.parent)}: {exc.strerror}") from None
    if read_only is None:
        read_only = not create and not writable(path)
    return SqliteStore(path, busy_timeout_ms=busy_timeout_ms, create=create, read_only=read_only,
                       schema_check=schema_check)


def writable(path: Path) -> bool:
    """May this user write the SQLite store at `path`: the file, and its -wal and
    -shm (made in its folder when they are not there)?"""
    if not os.access(path, os.W_OK):
        return False
    if os.access(path.parent, os.W_OK):
        return True
    return all(os.access(f"{path}{suffix}", os.W_OK) for suffix in ("-wal", "-shm"))


def is_new(locator: Locator) -> bool:
    """No store there yet: no file, or a database without ctmanager's tables."""
    if is_url(locator):
        from .pg import database_is_empty
        return database_is_empty(str(locator))
    return not Path(locator).exists()


def discard_new(locator: Locator) -> None:
    """Undo the making of a store that holds no configuration yet (a failed
    `init` leaves nothing half-made behind); an initialised store is never touched."""
    if is_url(locator):
        from .pg import drop_uninitialised
        drop_uninitialised(str(locator))
        return
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{locator}{suffix}")
