"""The SQLite backend: WAL mode, one writer at a time (BEGIN IMMEDIATE), readers
never blocked, a busy timeout so the CLI and the daemons can share one file.
Named locks are flock()s on a file beside the store."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from ..errors import ConflictError, StoreError
from . import versions
from .db import BUSY_TIMEOUT_MS, Params, Store, register_memory


class SqliteStore(Store):
    backend = "sqlite"
    NOW_SQL = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, path: Path, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS, image: bytes | None = None,
                 create: bool = True, read_only: bool = False, schema_check: bool = True) -> None:
        """`create`: a file that is not a ctmanager store yet (empty, new) becomes
        one, at this code's schema version; without it such a file is refused and
        left exactly as it was. An existing file holding another program's tables is
        refused either way. `read_only`: open it read-only and write nothing, not
        even at open (no WAL setup): a user who may only read the file can still
        read it. `schema_check`: refuse a schema this code may not use
        (store/versions.py); a store is never migrated at open."""
        super().__init__(path)
        self.file = path
        self.read_only = read_only
        # A private in-memory store has no other writer: its change counter is
        # known here without a query (None: read it from the store).
        self._private = str(path) == ":memory:"
        self._config_version: int | None = None
        self._mutexes: dict[str, threading.Lock] = {}  # a private store's locks
        try:
            if read_only:
                self.db = _connect_read_only(path, busy_timeout_ms)
            else:
                # isolation_level=None: we issue BEGIN/COMMIT ourselves.
                self.db = sqlite3.connect(str(path), isolation_level=None, timeout=busy_timeout_ms / 1000,
                                          check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            if image is not None:
                self.db.deserialize(image)
            self.db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if self.version == 0:  # read-only so far: nothing written yet
                self._refuse_unless_empty(create)
            self.db.execute("PRAGMA foreign_keys = ON")
            if not read_only:
                if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute("PRAGMA synchronous = NORMAL")
                if self.version == 0:
                    versions.create(self)
            if schema_check:
                versions.check(self)
        except sqlite3.Error as exc:
            with contextlib.suppress(Exception):
                self.db.close()
            raise StoreError(f"{self.where}: cannot open store: {exc}") from None
        except BaseException:
            with contextlib.suppress(Exception):
                self.db.close()
            raise

    def _refuse_unless_empty(self, create: bool) -> None:
        """A file without ctmanager's schema: made one only if asked to and empty
        (`init` must not add its tables beside another program's)."""
        if not create:
            raise StoreError(f"{self.where}: not a ctmanager store (an empty file, or another program's database); "
                             f"create one with: ctmanager --store {self.where} init TEMPLATE")
        names = [r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                                               "ORDER BY name")]
        if names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise ConflictError(f"{self.where}: holds {len(names)} table(s) or index(es) of another program "
                                f"({shown}); a store needs a new file, an empty one, or a ctmanager store")
        if self.read_only:
            raise StoreError(f"{self.where}: cannot make a store here: this user may not write it")

    @classmethod
    def memory(cls, image: bytes | None = None, clock: Callable[[], float] | None = None) -> SqliteStore:
        store = cls(Path(":memory:"), image=image)
        if clock is not None:  # the simulator's store node keeps simulated time
            store.db.create_function("ctm_now", 0, clock, deterministic=False)
            store.NOW_SQL = "ctm_now()"
            store.now = clock  # type: ignore[method-assign]
        return store

    def image(self) -> bytes:
        return self.db.serialize()

    def backup_into(self, path: str) -> tuple[int, bool]:
        """The whole store, as one committed state, into the new file at `path`
        (`store backup`; see backup_file)."""
        return backup_file(self.db, path)

    def close(self) -> None:
        self.db.close()

    @property
    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def set_version(self, version: int) -> None:
        self.db.execute(f"PRAGMA user_version = {int(version)}")

    # ---- transactions ----------------------------------------------------
    def transaction(self, *, config: bool = True, fenced: bool = True,
                    serialised: bool = True) -> contextlib.AbstractContextManager[Store]:
        if self.read_only:
            raise self.read_only_error()
        return _Transaction(self, config, fenced)  # a class, not a generator: the loop takes ~5 a second

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Store]:
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
            raise StoreError(f"{self.where}: store is busy or unusable ({exc}); try again") from None
        self._in_tx = True

    def _rollback(self) -> None:
        self._in_tx = False
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection is unusable; the next statement says so

    def config_version(self) -> int:
        if self._private and self._config_version is not None:
            return self._config_version
        version = super().config_version()
        if self._private and not self._in_tx:
            self._config_version = version
        return version

    # ---- named locks -----------------------------------------------------
    def _try_lock(self, name: str) -> Callable[[], None] | None:
        if self.read_only:  # the locks guard writes, and a lock file may not be made here
            raise self.read_only_error()
        if self._private:
            mutex = self._mutexes.setdefault(name, threading.Lock())
            return mutex.release if mutex.acquire(blocking=False) else None
        return _flock(self.file.with_name(f"{self.file.name}.{name}.lock"))

    # ---- statements (for the store's query modules only) -----------------
    def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        try:
            return self.db.execute(sql, params)
        except sqlite3.Error as exc:
            raise _error(self.where, exc) from None

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        rows = rows if isinstance(rows, list) else list(rows)
        if not rows:
            return  # the loop's steady state: most batches are empty
        try:
            self.db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise _error(self.where, exc) from None


class _Transaction:
    """SqliteStore.transaction: BEGIN IMMEDIATE, the fence, the body, the config
    counter's bump, COMMIT; any failure rolls back and is raised."""

    __slots__ = ("store", "config", "fenced")

    def __init__(self, store: SqliteStore, config: bool, fenced: bool) -> None:
        self.store, self.config, self.fenced = store, config, fenced

    def __enter__(self) -> Store:
        store = self.store
        if store._in_tx:
            raise StoreError("internal: nested store transaction")
        store._begin("BEGIN IMMEDIATE")
        if self.fenced and store.fence is not None:
            try:
                store.fence(store)
            except BaseException:
                store._rollback()
                raise
        return store

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        store = self.store
        if kind is not None:
            store._rollback()
            return  # the body's exception goes on
        if self.config:
            try:
                store._bump_config()
            except BaseException:
                store._rollback()
                raise
        try:
            store.db.execute("COMMIT")
        except sqlite3.Error as e:
            store._rollback()  # a failed COMMIT leaves the connection inside the transaction
            raise StoreError(f"{store.where}: cannot commit: {e}") from None
        finally:
            store._in_tx = False
            if self.config:
                store._config_version = None


register_memory(SqliteStore.memory)  # Store.memory: a private in-memory SQLite store


def _connect_read_only(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    """A read-only connection (mode=ro). Reading a WAL store needs its -shm file;
    when there is none and this user may not make one (a read-only folder), and no
    -wal holds uncommitted-to-file pages, the file alone is the whole store:
    opened immutable (SQLite's documented way to read such a file; a writer that
    checkpoints during this one command's reads is the accepted risk)."""
    uri = f"file:{quote(str(path.absolute()))}"
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, timeout=busy_timeout_ms / 1000,
                         check_same_thread=False)
    try:
        db.execute("PRAGMA user_version").fetchone()
        return db
    except sqlite3.OperationalError:
        db.close()
        if Path(f"{path}-wal").exists():
            raise
    return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None, check_same_thread=False)


def backup_file(source: sqlite3.Connection, path: str) -> tuple[int, bool]:
    """SQLite's online backup of `source` into the (new, empty) file at `path`: every
    page in one step, under one read transaction of the source, so the copy is one
    committed state while other processes write on (WAL: they are not blocked, and
    a step-wise copy would restart at each of their commits). The copy is then made
    a self-contained file (rollback journal: nothing beside it) and checked.
    Returns (its schema version, whether it holds a `meta` table)."""
    try:
        dest = sqlite3.connect(path, isolation_level=None)
        try:
            source.backup(dest, pages=-1)
            dest.execute("PRAGMA journal_mode = DELETE")
            verdict = str(dest.execute("PRAGMA quick_check").fetchone()[0])
            version = int(dest.execute("PRAGMA user_version").fetchone()[0])
            meta = dest.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        finally:
            dest.close()
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot copy the store: {exc}") from None
    if verdict != "ok":
        raise StoreError(f"{path}: the copy fails SQLite's check: {verdict}")
    return version, meta is not None


def open_file_read_only(path: Path) -> sqlite3.Connection:
    """An SQLite file (a backup being restored) for reading, as a user who may
    not write beside it may: a one-line StoreError if it is none."""
    try:
        db = _connect_read_only(path, BUSY_TIMEOUT_MS)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot read it as an SQLite store: {exc}") from None


def _flock(path: Path) -> Callable[[], None] | None:
    """A release function, or None if another process holds it. Read-only open:
    whoever may read the store may lock."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(f"{path}: cannot open lock file: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return lambda: os.close(fd)  # closing the descriptor drops the lock


def _error(path: str, exc: sqlite3.Error) -> StoreError:
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return StoreError(f"{path}: the store is read-only here ({text})")
    if "locked" in text or "busy" in text:
        return StoreError(f"{path}: store is busy ({text}); try again")
    return StoreError(f"{path}: store error: {text}")
