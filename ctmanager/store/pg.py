"""The PostgreSQL backend (psycopg 3): the DC-wide store.

Writes are serialised as on SQLite: every write transaction first takes one
transaction-level advisory lock, so check-then-act (CTID and IP allocation)
cannot race another writer anywhere in the DC; reads never wait. A
configuration commit also NOTIFYs `ctmanager_config` with the new counter
(delivered at commit), which `watch` LISTENs on. Named locks are session-level
advisory locks. The store's clock is the server's. Every psycopg error leaves
here as a one-line StoreError; a URL's password is never in one.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import psycopg
from psycopg import errors as pgerrors
from psycopg.conninfo import conninfo_to_dict

from ..errors import ConflictError, StoreError
from ..validate import is_digits
from . import versions
from .db import BUSY_TIMEOUT_MS, CONFIG_VERSION, Params, Store, redact, scrub
from .schema import tables

CHANNEL = "ctmanager_config"
LOCK_SPACE = 0x43544D  # "CTM": advisory locks are (LOCK_SPACE, hash of the name)
SCHEMA_KEY = "schema_version"
_SQL: dict[str, str] = {}  # statement text with ? placeholders -> psycopg's %s form


# A server that vanishes without a reset (power loss, a failover behind a VIP) is
# found within ~10 s instead of TCP's ~15 min: a daemon's loop must not hang on it.
LIVENESS: dict[str, Any] = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
            "keepalives_count": 3, "tcp_user_timeout": 10_000}
STATEMENT_TIMEOUT_MS = 60_000


def connect(url: str, application_name: str = "ctmanager", **kwargs: Any) -> psycopg.Connection[Any]:
    """An autocommit connection with the liveness settings; a failure is a
    one-line StoreError without the URL's secrets."""
    try:
        db = psycopg.connect(url, autocommit=True, application_name=application_name, **LIVENESS, **kwargs)
        db.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        return db
    except psycopg.Error as exc:
        raise StoreError(f"{redact(url)}: cannot connect to the store: {scrub(_first_line(exc), url)}") from None
    except Exception as exc:  # noqa: BLE001 - a malformed URL is a ProgrammingError or a ValueError
        raise StoreError(f"{redact(url)}: not a usable PostgreSQL URL: {scrub(_first_line(exc), url)}") from None


def _pgpass_field(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")


def split_password(url: str) -> tuple[str, str]:
    """A URL split into the URL without its password (for a unit's environment) and
    the matching pgpass line (for a file only its user reads: libpq's PGPASSFILE)."""
    try:
        info = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - psycopg's message echoes the URL, password included
        raise StoreError(f"{redact(url)}: not a usable PostgreSQL URL") from None
    host, port = str(info.get("host", "localhost")), str(info.get("port", "5432"))
    user, db, password = str(info.get("user", "")), str(info.get("dbname", "")), str(info.get("password", ""))
    if not (user and db and password):
        raise StoreError(f"{redact(url)}: the URL must name its user, password and database "
                         "(postgresql://USER:PW@HOST/DB)")
    bare = f"postgresql://{quote(user, safe='')}@{host}:{port}/{quote(db, safe='')}"
    return bare, ":".join(_pgpass_field(f) for f in (host, port, db, user, password)) + "\n"


def lock_key(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def pg_sql(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (a literal % doubled). The statements
    hold no `?` inside string literals (they take parameters instead)."""
    out = _SQL.get(sql)
    if out is None:
        out = _SQL[sql] = sql.replace("%", "%%").replace("?", "%s")
    return out


class PgRow(tuple):  # type: ignore[type-arg]
    """By position and by column name, like sqlite3.Row."""

    __slots__ = ()
    _index: ClassVar[dict[str, int]] = {}

    def __getitem__(self, key: Any) -> Any:
        if type(key) is str:
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


_ROW_TYPES: dict[tuple[str, ...], type[PgRow]] = {}


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], PgRow]:
    names = tuple(d.name for d in cursor.description or ())
    kind = _ROW_TYPES.get(names)
    if kind is None:
        kind = _ROW_TYPES[names] = type("PgRow", (PgRow,), {"__slots__": (),
                                                           "_index": {n: i for i, n in enumerate(names)}})
    return kind


class PgStore(Store):
    backend = "postgresql"
    NOW_SQL = "extract(epoch FROM clock_timestamp())::float8"

    def __init__(self, url: str, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS, create: bool = True,
                 read_only: bool = False, schema_check: bool = True) -> None:
        """`create`: an empty database becomes a store, at this code's schema
        version (one holding another program's tables is refused: init must not
        add ours beside them). `read_only`: every transaction read-only.
        `schema_check`: refuse a schema this code may not use (store/versions.py);
        a store is never migrated at open."""
        super().__init__(url)
        self.url, self.busy_timeout_ms = url, busy_timeout_ms
        self.read_only = read_only
        self.db = self._connect()
        try:
            if create:
                self._refuse_foreign()
            if not create and self.version == 0:
                self._refuse_unseen()
                raise StoreError(f"{self.where}: not a ctmanager store (an empty database, or another program's); "
                                 f"create one with: ctmanager --store URL init TEMPLATE")
            if self.version == 0:
                if read_only:
                    raise StoreError(f"{self.where}: cannot make a store here: it is opened read-only")
                versions.create(self)
            if schema_check:
                versions.check(self)
        except BaseException:
            self.db.close()
            raise

    def _refuse_unseen(self) -> None:
        """A role that may not look into the store's schema sees no tables at all:
        say so, rather than call the store empty."""
        row = self.one("SELECT current_schema() IS NOT NULL AND has_schema_privilege(current_schema(), 'USAGE')")
        if not row[0]:
            raise StoreError(f"{self.where}: this role may not use the database's schema (no USAGE), so it cannot "
                             "see the store; the store's owner can grant it: GRANT USAGE ON SCHEMA public TO ROLE")

    def _refuse_foreign(self) -> None:
        """Tables in our schema that are not a ctmanager store's: another program's."""
        names = [r[0] for r in self.query("SELECT table_name FROM information_schema.tables "
                                          "WHERE table_schema = current_schema() ORDER BY table_name")]
        if not names:
            return
        try:
            ours = "meta" in names and self.version > 0
        except StoreError:  # a `meta` table of another shape
            ours = False
        if not ours:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise ConflictError(f"{self.where}: the database holds {len(names)} table(s) of another program "
                                f"({shown}); a store needs an empty database or a ctmanager store")

    def _connect(self) -> psycopg.Connection[Any]:
        db = connect(self.url, row_factory=_row_factory)
        try:
            # an advisory lock's wait obeys lock_timeout: a stuck writer makes us busy, not hung
            db.execute(f"SET lock_timeout = {int(self.busy_timeout_ms)}")
            if self.read_only:  # the server refuses any write of this session, whatever the role may do
                db.execute("SET default_transaction_read_only = on")
        except psycopg.Error as exc:
            db.close()
            raise _error(self.where, exc, "cannot set up the connection") from None
        return db

    def _usable(self) -> None:
        """A connection the server dropped (a restart, a failover) is made again
        before the next statement outside a transaction; inside one the statement
        fails and the caller retries the whole transaction. Session locks
        (`lock()`) died with it: each is taken again on the new connection, and
        one another process took meanwhile goes to `lost_locks`."""
        if self._in_tx or not self.db.broken:
            return
        self.db = self._connect()
        for name in sorted(self._held):
            key = (LOCK_SPACE, lock_key(name))
            try:
                row = self.db.execute(pg_sql("SELECT pg_try_advisory_lock(?, ?)"), key).fetchone()
            except psycopg.Error as exc:
                raise _error(self.where, exc, "cannot take a lock again after reconnecting") from None
            if not (row and row[0]):
                self._held.discard(name)
                self.lost_locks.add(name)

    def close(self) -> None:
        self.db.close()

    @property
    def version(self) -> int:
        row = self.one("SELECT to_regclass('meta') IS NOT NULL")
        if not row[0]:
            return 0
        value = self.get_meta(SCHEMA_KEY)
        return int(value) if value and is_digits(value) else 0

    def set_version(self, version: int) -> None:
        self.set_meta(SCHEMA_KEY, str(int(version)))

    # ---- transactions ----------------------------------------------------
    @contextlib.contextmanager
    def transaction(self, *, config: bool = True, fenced: bool = True, serialised: bool = True) -> Iterator[Store]:
        if self.read_only:
            raise self.read_only_error()
        if self._in_tx:
            raise StoreError("internal: nested store transaction")
        self._usable()
        self._in_tx = True
        try:
            with self._translated("cannot commit"), self.db.transaction():
                if serialised:
                    self.execute("SELECT pg_advisory_xact_lock(?, ?)", (LOCK_SPACE, lock_key("write")))
                if fenced and self.fence is not None:
                    self.fence(self)
                yield self
                if config:
                    self._bump_config()
                    self.execute("SELECT pg_notify(?, value) FROM meta WHERE key = ?", (CHANNEL, CONFIG_VERSION))
        finally:
            self._in_tx = False

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Store]:
        if self._in_tx:
            yield self
            return
        self._usable()
        self._in_tx = True
        try:
            with self._translated("cannot read"), self.db.transaction():
                self.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield self
        finally:
            self._in_tx = False

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """psycopg errors raised outside execute() (COMMIT, BEGIN) as StoreError."""
        try:
            yield
        except psycopg.Error as exc:
            raise _error(self.where, exc, what) from None

    def now(self) -> float:
        return float(self.one(f"SELECT {self.NOW_SQL}")[0])

    # ---- named locks -----------------------------------------------------
    def _try_lock(self, name: str) -> Callable[[], None] | None:
        # tried, not waited for: a blocking pg_advisory_lock would be cut short by lock_timeout
        key = (LOCK_SPACE, lock_key(name))
        if not self.one("SELECT pg_try_advisory_lock(?, ?)", key)[0]:
            return None

        def release() -> None:
            with contextlib.suppress(StoreError):  # a lost connection dropped the lock already
                self.one("SELECT pg_advisory_unlock(?, ?)", key)
        return release

    # ---- statements (for the store's query modules only) -----------------
    def execute(self, sql: str, params: Params = ()) -> psycopg.Cursor[Any]:
        self._usable()
        try:
            return self.db.execute(pg_sql(sql), params)
        except psycopg.Error as exc:
            raise _error(self.where, exc) from None

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        rows = rows if isinstance(rows, list) else list(rows)
        if not rows:
            return
        self._usable()
        try:
            with self.db.cursor() as cur:
                cur.executemany(pg_sql(sql), rows)
        except psycopg.Error as exc:
            raise _error(self.where, exc) from None


def database_is_empty(url: str) -> bool:
    """No ctmanager tables there (a StoreError if the database cannot be reached)."""
    with connect(url) as con:
        try:
            row = con.execute("SELECT to_regclass('meta') IS NULL").fetchone()
        except psycopg.Error as exc:
            raise _error(redact(url), exc) from None
        return bool(row and row[0])


def drop_uninitialised(url: str) -> None:
    """Drop ctmanager's tables from a database whose store was never initialised."""
    names = tables()
    try:
        with connect(url) as con, con.transaction():
            if con.execute("SELECT to_regclass('meta') IS NULL").fetchone()[0]:  # type: ignore[index]
                return
            if con.execute("SELECT 1 FROM meta WHERE key = %s", (SCHEMA_KEY,)).fetchone() is None:
                return  # another program's meta table: none of these tables are ours
            if con.execute("SELECT 1 FROM meta WHERE key = 'template'").fetchone() is not None:
                return  # initialised: not ours to drop
            for table in reversed(names):
                con.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')  # names from our own schema text
    except (psycopg.Error, StoreError):
        pass  # best effort: the failure that brought us here is what the user hears of


def empty_database(admin_url: str, name: str) -> None:
    """For the lab and the tests: database `name` made, or emptied (its sessions
    ended, its tables dropped). `name`: ASCII letters, digits and underscores."""
    if not name.isascii() or not name.replace("_", "").isalnum():
        raise StoreError(f"bad database name {name!r}: letters, digits and underscores only")
    try:
        with connect(admin_url) as con:
            if con.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                con.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')  # name checked above
                return
            con.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        with connect(admin_url, dbname=name) as con:
            con.execute("DROP SCHEMA public CASCADE")
            # as a new database has it (PostgreSQL 15): any role may look in, only the owner create
            con.execute("CREATE SCHEMA public AUTHORIZATION pg_database_owner")
            con.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
    except psycopg.Error as exc:
        raise _error(redact(admin_url), exc, f"cannot make database {name}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _error(where: str, exc: psycopg.Error, what: str = "store error") -> StoreError:
    text = _first_line(exc)
    if isinstance(exc, (pgerrors.LockNotAvailable, pgerrors.DeadlockDetected, pgerrors.SerializationFailure)):
        return StoreError(f"{where}: store is busy ({text}); try again")
    if isinstance(exc, psycopg.OperationalError):
        return StoreError(f"{where}: cannot reach the store ({text}); try again")
    if isinstance(exc, pgerrors.ReadOnlySqlTransaction):
        return StoreError(f"{where}: the store is read-only here ({text})")
    return StoreError(f"{where}: {what}: {text}")
