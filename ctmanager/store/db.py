"""The SQLite backend: WAL mode, one writer at a time (BEGIN IMMEDIATE), readers
never blocked, a busy timeout so the CLI and the daemons can share one file.

The statements themselves live in the store's query modules (queries, inventory,
loop, dns, proxies), written in SQL that SQLite and PostgreSQL both read; a
backend only supplies connections, transactions, the change counter and error
translation. Every sqlite3 error leaves here as a StoreError (one line).

The change counter: every configuration write bumps meta `config_version` in
the same transaction (`transaction()`, the default). The reconcile loop's and the
DNS worker's own writes use `transaction(config=False)` and never wake readers,
so a daemon can tell "someone edited the configuration" from its own commits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..wire.validate import is_digits
from .schema import MIGRATIONS, VERSION

DEFAULT_PATH = "/var/lib/ctmanager/ctmanager.db"
ENV_VAR = "CTMANAGER_STORE"
BUSY_TIMEOUT_MS = 10_000
CONFIG_VERSION = "config_version"

Params = Sequence[Any] | dict[str, Any]
Row = sqlite3.Row


def default_path(explicit: str | None = None) -> Path:
    """--store, then $CTMANAGER_STORE, then /var/lib/ctmanager/ctmanager.db."""
    return Path(explicit or os.environ.get(ENV_VAR) or DEFAULT_PATH)


def open_store(path: Path, *, create: bool = False, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> Store:
    if not create and not path.exists():
        raise StoreError(f"no store at {path}; create one with: ctmanager --store {path} init TEMPLATE")
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {path.parent}: {exc.strerror}") from None
    return Store(path, busy_timeout_ms=busy_timeout_ms, create=create)


class Store:
    def __init__(self, path: Path, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS, image: bytes | None = None,
                 create: bool = True) -> None:
        """`create`: a file that is not a ctmanager store yet (empty, new) becomes
        one; without it such a file is refused and left exactly as it was."""
        self.path = path
        self.cache: dict[Any, Any] = {}  # values derived from rows that never change (the parsed DC template)
        self._in_tx = False
        # A private in-memory store has no other writer: its change counter is
        # known here without a query (None: read it from the store).
        self._private = str(path) == ":memory:"
        self._config_version: int | None = None
        self._held: set[str] = set()  # names of the locks (`lock()`) this Store holds
        self._mutexes: dict[str, threading.Lock] = {}  # a private store's locks
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            self.db = sqlite3.connect(str(path), isolation_level=None, timeout=busy_timeout_ms / 1000,
                                      check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            if image is not None:
                self.db.deserialize(image)
            self.db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if not create and self.version == 0:  # read-only so far: nothing written yet
                self.db.close()
                raise StoreError(f"{path}: not a ctmanager store (an empty file, or another program's database); "
                                 f"create one with: ctmanager --store {path} init TEMPLATE")
            self.db.execute("PRAGMA foreign_keys = ON")
            if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open store: {exc}") from None

    @classmethod
    def memory(cls, image: bytes | None = None) -> Store:
        """A private in-memory store (the simulator runs one per schedule), from an
        `image()` of another store if given."""
        return cls(Path(":memory:"), image=image)

    def image(self) -> bytes:
        return self.db.serialize()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
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
        with self.transaction(config=False):
            current = self.version  # another process may have migrated meanwhile
            for i in range(current, VERSION):
                for statement in _statements(MIGRATIONS[i]):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {i + 1}")

    # ---- transactions ----------------------------------------------------
    @contextlib.contextmanager
    def transaction(self, *, config: bool = True) -> Iterator[Store]:
        """A write transaction: all or nothing. Takes the write lock up front so a
        read-then-write (check-then-act, e.g. IP allocation) cannot race another
        writer. `config`: this is a configuration change (bumps the counter)."""
        if self._in_tx:
            raise StoreError("internal: nested store transaction")
        self._begin("BEGIN IMMEDIATE")
        try:
            yield self
            if config:
                self.execute("INSERT INTO meta(key, value) VALUES (?, '1') ON CONFLICT(key) DO UPDATE SET "
                             "value = CAST(CAST(meta.value AS INTEGER) + 1 AS TEXT)", (CONFIG_VERSION,))
        except BaseException:
            self._rollback()
            raise
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()  # a failed COMMIT leaves the connection inside the transaction
            raise StoreError(f"{self.path}: cannot commit: {exc}") from None
        finally:
            self._in_tx = False
            if config:
                self._config_version = None

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Store]:
        """A read transaction: every read inside sees the same committed state (a
        `ct rm` landing between two reads cannot make a CT look unplaced)."""
        if self._in_tx:
            yield self  # already inside a transaction: that is a snapshot too
            return
        self._begin("BEGIN")
        try:
            yield self
        finally:
            self._rollback()

    def _begin(self, how: str) -> None:
        try:
            self.db.execute(how)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: store is busy or unusable ({exc}); try again") from None
        self._in_tx = True

    def _rollback(self) -> None:
        self._in_tx = False
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection is unusable; the next statement says so

    # ---- named locks ---------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str, wait: float | None = None) -> Iterator[bool]:
        """An exclusive lock shared by every process on this store (the DNS
        publisher's: a CLI edit and the manager's DNS worker must not send the same
        change twice). Yields False if it was not free within `wait` seconds (None:
        wait as long as it takes). Held across transactions; re-entrant per Store.
        SQLite: flock on a file beside the store; a private store: a mutex."""
        if name in self._held:
            yield True
            return
        if self._private:
            mutex = self._mutexes.setdefault(name, threading.Lock())
            got = mutex.acquire(timeout=-1 if wait is None else wait)
            release = mutex.release
        else:
            got, release = _flock(self.path.with_name(f"{self.path.name}.{name}.lock"), wait)
        if not got:
            yield False
            return
        self._held.add(name)
        try:
            yield True
        finally:
            self._held.discard(name)
            release()

    # ---- statements (for the store's query modules only) -----------------
    def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        try:
            return self.db.execute(sql, params)
        except sqlite3.Error as exc:
            raise _error(self.path, exc) from None

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        rows = rows if isinstance(rows, list) else list(rows)
        if not rows:
            return  # the loop's steady state: most batches are empty
        try:
            self.db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise _error(self.path, exc) from None

    def query(self, sql: str, params: Params = ()) -> list[Row]:
        return self.execute(sql, params).fetchall()

    def one(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = self.execute(sql, params).fetchone()
        return row

    def get_meta(self, key: str) -> str | None:
        row = self.one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                     (key, value))

    def event(self, kind: str, subject: str, detail: str = "") -> None:
        self.execute("INSERT INTO events(at, kind, subject, detail) VALUES (?, ?, ?, ?)",
                     (time.time(), kind, subject, detail))

    def config_version(self) -> int:
        """The change counter: it moves on every configuration commit, by anyone."""
        if self._private and self._config_version is not None:
            return self._config_version
        value = self.get_meta(CONFIG_VERSION)
        version = int(value) if value and is_digits(value) else 0
        if self._private and not self._in_tx:
            self._config_version = version
        return version


def _flock(path: Path, wait: float | None) -> tuple[bool, Any]:
    """(acquired, release). Read-only open: whoever may read the store may lock."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(f"{path}: cannot open lock file: {exc.strerror}") from None
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:  # type: ignore[operator]  # NB only with a deadline
                os.close(fd)
                return False, None
            time.sleep(0.02)  # flock has no timed wait; poll until the deadline

    def release() -> None:
        os.close(fd)  # closing the descriptor drops the lock
    return True, release


def _error(path: Path, exc: sqlite3.Error) -> StoreError:
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return StoreError(f"{path}: the store is read-only here ({text})")
    if "locked" in text or "busy" in text:
        return StoreError(f"{path}: store is busy ({text}); try again")
    return StoreError(f"{path}: store error: {text}")


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit mid-way)."""
    code = "\n".join(line for line in script.splitlines() if not line.strip().startswith("--"))
    return [stmt.strip() for stmt in code.split(";") if stmt.strip()]
