"""Waiting on configuration changes without waking on anything else.

A reader that keeps an in-memory view of the configuration (ctmailmap's index,
the manager's configured state) polls `ConfigWatch.token()`: one open read-only
connection and one tiny query. The token moves when anybody commits a
configuration change (the store's change counter) and when the file at the path
is a different file (a store replaced by `mv` is a new store: the path is
followed, not the old open file)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..errors import StoreError
from ..wire.validate import is_digits
from .db import CONFIG_VERSION

Token = tuple[int, int, int]  # (device, inode, change counter)


class ConfigWatch:
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

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
        self._con, self._ident = None, None
