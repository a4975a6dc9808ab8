"""SQLite store: WAL mode, one writer at a time (BEGIN IMMEDIATE), readers never
blocked, a busy timeout so the CLI and a daemon can share one file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

from ..errors import StoreError
from .schema import MIGRATIONS, VERSION

DEFAULT_PATH = "/var/lib/ctmanager/ctmanager.db"
ENV_VAR = "CTMANAGER_STORE"
BUSY_TIMEOUT_MS = 10_000


def default_path(explicit: str | None = None) -> Path:
    """--store, then $CTMANAGER_STORE, then /var/lib/ctmanager/ctmanager.db."""
    return Path(explicit or os.environ.get(ENV_VAR) or DEFAULT_PATH)


def open_store(path: Path, *, create: bool = False) -> "Store":
    if not create and not path.exists():
        raise StoreError(f"no store at {path}; create one with: ctmanager --store {path} init TEMPLATE")
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {path.parent}: {exc.strerror}") from None
    return Store(path)


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            self.db = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
            self.db.row_factory = sqlite3.Row
            self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.db.execute("PRAGMA foreign_keys = ON")
            if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: cannot open store: {exc}") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.version
        if current > VERSION:
            raise StoreError(
                f"{self.path}: store schema version {current} is newer than this ctmanager ({VERSION}); upgrade ctmanager"
            )
        if current == VERSION:
            return
        with self.transaction():
            current = self.version  # another process may have migrated meanwhile
            for i in range(current, VERSION):
                for statement in _statements(MIGRATIONS[i]):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {i + 1}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: all or nothing. Takes the write lock up front so
        a read-then-write (e.g. IP allocation) cannot race another writer."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"{self.path}: store is busy ({exc}); try again") from None
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    # ---- small helpers -------------------------------------------------
    def query(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        return self.db.execute(sql, params).fetchall()

    def one(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> sqlite3.Row | None:
        return self.db.execute(sql, params).fetchone()

    def get_meta(self, key: str) -> str | None:
        row = self.one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def event(self, kind: str, subject: str, detail: str = "") -> None:
        self.db.execute(
            "INSERT INTO events(at, kind, subject, detail) VALUES (?, ?, ?, ?)", (time.time(), kind, subject, detail)
        )


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit mid-way)."""
    code = "\n".join(line for line in script.splitlines() if not line.strip().startswith("--"))
    return [stmt.strip() for stmt in code.split(";") if stmt.strip()]
