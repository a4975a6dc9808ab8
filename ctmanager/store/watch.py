"""Waiting on configuration changes without waking on anything else.

A reader that keeps an in-memory view of the configuration (ctmailmap's index,
the manager's configured state, the DNS worker's records) holds a watch and asks
for its `token()`: it moves when anybody commits a configuration change (the
store's change counter), and when the reader must reload everything because it
may have missed one (a store file replaced by `mv`; a PostgreSQL connection
that was lost and made again). Writes of observed state never move it.

- SQLite: one open read-only connection, one tiny query per `token()`; readers
  poll it every POLL seconds (no signal crosses processes).
- PostgreSQL: a LISTEN connection; a configuration commit NOTIFYs (pg.CHANNEL),
  `fileno()` turns readable, and `token()` reads the counter only then (and every
  RECHECK seconds, which also finds a dead connection). An idle reader costs the
  server nothing.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Protocol

from ..errors import StoreError
from ..validate import is_digits
from .db import CONFIG_VERSION, Locator, is_url, redact

Token = tuple[int, int, int]  # (device or 0, inode or connection generation, change counter)
POLL = 0.05  # s between an SQLite reader's checks: an edit is seen within this
RECHECK = 10.0  # s: a PostgreSQL watch reads the counter at least this often


class Watch(Protocol):
    def token(self) -> Token: ...
    def fileno(self) -> int | None:
        """A descriptor that turns readable when the token may have moved (None:
        poll token() every POLL s)."""
    def close(self) -> None: ...


def open_watch(locator: Locator) -> Watch:
    return PgWatch(str(locator)) if is_url(locator) else FileWatch(Path(locator))


class FileWatch:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._con: sqlite3.Connection | None = None
        self._ident: tuple[int, int] | None = None

    def token(self) -> Token:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            self.close()
            raise StoreError(f"{self.path}: {exc.strerror}") from None
        ident = (st.st_dev, st.st_ino)
        if ident != self._ident:
            self.close()
        try:
            if self._con is None:
                self._con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=2,
                                            check_same_thread=False)
                self._ident = ident
            row = self._con.execute("SELECT value FROM meta WHERE key = ?", (CONFIG_VERSION,)).fetchone()
        except sqlite3.Error as exc:
            self.close()
            raise StoreError(f"{self.path}: cannot read the store: {exc}") from None
        return (*ident, int(row[0]) if row and is_digits(str(row[0])) else 0)

    def fileno(self) -> int | None:
        return None

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
        self._con, self._ident = None, None


class PgWatch:
    def __init__(self, url: str) -> None:
        self.url, self.where = url, redact(url)
        self._con: Any = None
        self._generation = 0
        self._token: Token | None = None
        self._read_at = 0.0

    def token(self) -> Token:
        import psycopg

        from .pg import CHANNEL, connect

        try:
            if self._con is None:
                self._con = connect(self.url, "ctmanager watch")
                self._con.execute(f"LISTEN {CHANNEL}")
                self._generation += 1  # a new connection may have missed changes: the token moves
                self._token = None
            notified = any(True for _ in self._con.notifies(timeout=0))
            if notified or self._token is None or time.monotonic() - self._read_at >= RECHECK:
                row = self._con.execute("SELECT value FROM meta WHERE key = %s", (CONFIG_VERSION,)).fetchone()
                self._token = (0, self._generation, int(row[0]) if row and is_digits(str(row[0])) else 0)
                self._read_at = time.monotonic()
        except psycopg.Error as exc:
            self.close()
            line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StoreError(f"{self.where}: cannot read the store: {line}") from None
        return self._token

    def fileno(self) -> int | None:
        return None if self._con is None else int(self._con.fileno())


    def close(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            except Exception:  # noqa: BLE001, S110 - a broken connection closes as it can
                pass
        self._con, self._token = None, None

