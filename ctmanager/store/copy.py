"""`ctmanager store copy SRC DST`: a whole store into a new one, on either
backend (SQLite -> PostgreSQL to move a DC onto its shared store, and back).
Every row of every table, ids kept, in one transaction on the destination; its
id sequences then continue after the copied ids. The destination must be new
(no file, or a database without ctmanager's tables) and is left so if anything
fails; it is made at this code's schema version, so the source must be at it too
(migrate it first, or copy with the ctmanager of its version)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import ConflictError, InputError, StoreError
from .backends import discard_new, is_new, open_store
from .db import Locator, Store, is_url, redact
from .schema import SERIAL_COLUMNS, VERSION, tables
from .versions import COMPAT_KEY

BATCH = 5000  # rows per executemany: memory stays flat on a large DC
LOCAL_META = ("schema_version", COMPAT_KEY)  # the destination's own schema bookkeeping, not the store's content


def copy(src: Locator, dst: Locator, progress: Callable[[str], None] = lambda _: None) -> dict[str, int]:
    """Rows copied per table."""
    if str(src) == str(dst) or (not is_url(src) and not is_url(dst) and Path(src).resolve() == Path(dst).resolve()):
        raise InputError("SRC and DST are the same store")
    if not is_new(dst):
        raise ConflictError(f"{redact(dst)} already exists (a file) or holds a store; copy into a new file or an "
                            "empty database")
    with open_store(src) as source:
        if source.get_meta("template") is None:
            raise InputError(f"{source.where} is not initialised: nothing to copy")
        if source.version != VERSION:  # a newer one this code may read: its rows may not fit this schema
            raise StoreError(f"{source.where}: store schema version {source.version} is not this ctmanager's "
                             f"({VERSION}): copy it with the ctmanager of its version")
        try:
            with open_store(dst, create=True) as target:
                return _copy(source, target, progress)
        except BaseException:
            discard_new(dst)
            raise


def _copy(source: Store, target: Store, progress: Callable[[str], None]) -> dict[str, int]:
    counts: dict[str, int] = {}
    with source.snapshot(), target.transaction(config=False):
        own = {k: target.get_meta(k) for k in LOCAL_META}
        target.execute("DELETE FROM meta")  # a new store's own rows; the source's replace them
        for table in tables():
            rows = source.query(f"SELECT * FROM {table}")  # noqa: S608 - names from our schema text
            counts[table] = len(rows)
            if not rows:
                continue
            cols = list(rows[0].keys())
            values = [tuple(r) for r in rows if not (table == "meta" and r[0] in LOCAL_META)]
            sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            for i in range(0, len(values), BATCH):
                target.executemany(sql, values[i:i + BATCH])
            progress(f"{table}: {len(values)} row(s)")
        if target.backend == "postgresql":
            for table, col in SERIAL_COLUMNS:  # identity sequences go on after the copied ids
                target.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{col}'), "
                               f"coalesce(max({col}), 0) + 1, false) FROM {table}")
        for k, value in own.items():
            if value is not None:
                target.set_meta(k, value)
    return counts
