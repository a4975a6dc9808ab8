"""The store's backend interface (which backend a locator picks: backends.py).

`--store` / $CTMANAGER_STORE is a file path (SQLite, the embedded default for one
machine: `sqlite.py`) or a `postgresql://` URL (the DC-wide store every rack's
managers, the CLI, the DNS workers and ctmailmap share: `pg.py`). The statements
live in the store's query modules (queries, inventory, loop, dns, proxies,
daemon), written once in SQL both read, with `?` placeholders; a backend supplies
connections, transactions with the same write serialisation, the change counter
(and its signal), named locks, the store's clock and error translation. Every
driver error leaves a backend as a StoreError (one line).

The change counter: every configuration write bumps meta `config_version` in
the same transaction (`transaction()`, the default). The reconcile loop's and the
DNS worker's own writes use `transaction(config=False)` and never wake readers,
so a daemon can tell "someone edited the configuration" from its own commits.
"""

from __future__ import annotations

import abc
import contextlib
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..errors import InputError, StoreError
from ..validate import is_digits

DEFAULT_PATH = "/var/lib/ctmanager/ctmanager.db"
ENV_VAR = "CTMANAGER_STORE"
BUSY_TIMEOUT_MS = 10_000
CONFIG_VERSION = "config_version"
URL_SCHEMES = ("postgresql://", "postgres://")
LOCK_POLL = 0.02  # s between tries for a named lock that is taken

Params = Sequence[Any]
Locator = Path | str  # a file path, or a postgresql:// URL (kept as text: a Path would fold its //)


class Row(Protocol):
    """A result row: by position and by column name (sqlite3.Row, pg.PgRow)."""

    def __getitem__(self, key: int | str) -> Any: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...
    def keys(self) -> list[str]: ...


def is_url(locator: Locator) -> bool:
    return isinstance(locator, str) and locator.startswith(URL_SCHEMES)


# `word://` in any case: a URL, whether or not it is one we speak. Anything like it
# that is not exactly a supported scheme is refused, never taken for a file name
# (`PostgreSQL://u:PW@h/db` would otherwise become a folder named with the password).
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_CONNINFO = re.compile(r"[A-Za-z_]+\s*=")  # libpq's `host=h password=...` form


def parse_locator(text: str, field: str = "--store") -> Locator:
    """The one check of a store locator the user gave (--store, $CTMANAGER_STORE,
    a config's `store =`): a file path (SQLite) or a postgresql:// URL. Refused in
    one line, the password redacted: empty, blank or control characters, space at
    either end, another scheme (or this one in other letters), libpq's key=value form."""
    if text and text == text.strip() and text.isprintable() and not _SCHEME.match(text) \
            and not _CONNINFO.match(text):
        return Path(text)  # the common case, a plain path: nothing to show
    shown = redact(text).encode("unicode_escape").decode("ascii")[:300]
    if not text or not text.strip():
        raise InputError(f"{field}: empty store locator: give a file path or a postgresql:// URL")
    if not text.isprintable():  # a control character, or one no terminal shows (the name is printed and logged)
        raise InputError(f"{field}: control or unprintable character in the store locator '{shown}'")
    if text != text.strip():
        raise InputError(f"{field}: space at the start or end of the store locator '{shown}'")
    if _SCHEME.match(text) and not text.startswith(URL_SCHEMES):
        raise InputError(f"{field}: unsupported store locator '{shown}': give a file path (SQLite) or a "
                         f"postgresql:// URL (the scheme in lower case)")
    if _CONNINFO.match(text) and " " in text:
        raise InputError(f"{field}: '{shown}' looks like a libpq key=value string: give a postgresql:// URL")
    return text if is_url(text) else Path(text)


def default_path(explicit: str | None = None) -> Locator:
    """--store, then $CTMANAGER_STORE, then /var/lib/ctmanager/ctmanager.db; checked
    by parse_locator (an empty --store is refused; an empty variable is unset)."""
    if explicit is not None:
        return parse_locator(explicit, "--store")
    env = os.environ.get(ENV_VAR)
    if env:
        return parse_locator(env, f"${ENV_VAR}")
    return Path(DEFAULT_PATH)


def redact(locator: Locator) -> str:
    """The locator as it may be shown, the one redaction every message uses: a
    URL's password (user:PASSWORD@, even with an @ or / in it; ?password=,
    ?sslpassword=, libpq's password=) is never printed."""
    text = str(locator)
    if "://" in text:
        scheme, _, rest = text.partition("://")
        query = rest.find("?")
        head, tail = (rest, "") if query < 0 else (rest[:query], rest[query:])
        at = head.rfind("@")  # userinfo ends at the last @ before the query
        if at >= 0:
            user = head[:at]
            head = (f"{user.split(':', 1)[0]}:***" if ":" in user else user) + head[at:]
        text = f"{scheme}://{head}{tail}"
    return re.sub(r"((?:^|[?&\s])(?:ssl)?password\s*=\s*)[^&\s]*", r"\1***", text, flags=re.IGNORECASE)


def scrub(text: str, locator: Locator) -> str:
    """A driver's message about `locator` with the URL's secrets taken out: the
    password wherever it appears, and any token libpq quotes from the URL."""
    secrets = set()
    loc = str(locator)
    if "://" in loc:
        head = loc.partition("://")[2].partition("?")[0]
        user = head.rpartition("@")[0]
        if ":" in user:
            secrets.add(user.split(":", 1)[1])
    secrets.update(m.group(1) for m in re.finditer(r"(?:^|[?&\s])(?:ssl)?password\s*=\s*([^&\s]*)", loc,
                                                   flags=re.IGNORECASE))
    for s in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(s, "***")
    return re.sub(r'(percent-encoded token: )"[^"]*"', r"\1***", text)


# The backend that makes private in-memory stores (`Store.memory`): store/sqlite.py
# registers itself when it is imported (store/__init__ imports it, through backends).
_memory: Callable[[bytes | None, Callable[[], float] | None], Store] | None = None


def register_memory(make: Callable[[bytes | None, Callable[[], float] | None], Store]) -> None:
    global _memory
    _memory = make


class Store(abc.ABC):
    """One connection to the store. Not shared between threads: each daemon
    thread opens its own."""

    backend: str  # "sqlite" or "postgresql"
    NOW_SQL: str  # the store's clock in SQL (epoch seconds), for values the store itself stamps

    def __init__(self, locator: Locator) -> None:
        self.path = locator
        self.where = redact(locator)  # for messages
        self.read_only = False  # opened read-only (this user may not write it): every transaction is refused
        self.cache: dict[Any, Any] = {}  # values derived from rows that never change (the parsed DC template)
        self._in_tx = False
        self._held: set[str] = set()  # names of the locks (`lock()`) this Store holds
        self.lost_locks: set[str] = set()  # held locks a reconnect could not take again (another process has them)
        # Run at the start of every fenced write transaction, under the write lock:
        # a manager's lease check (store/lease.py), so a deposed leader writes nothing.
        self.fence: Callable[[Store], None] | None = None

    @staticmethod
    def memory(image: bytes | None = None, clock: Callable[[], float] | None = None) -> Store:
        """A private in-memory SQLite store (the simulator runs one per schedule),
        from an `image()` of another if given; `clock`: the store's clock (Store.now
        and NOW_SQL) instead of this machine's."""
        if _memory is None:
            raise StoreError("no in-memory store backend is loaded (ctmanager.store.sqlite)")
        return _memory(image, clock)

    def read_only_error(self) -> StoreError:
        return StoreError(f"{self.where}: the store is opened read-only (this user may not write it) and this "
                          "command changes it: run it as a user who may")

    def image(self) -> bytes:
        raise StoreError(f"{self.where}: only an SQLite store has an image")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- what a backend supplies ------------------------------------------
    @abc.abstractmethod
    def close(self) -> None: ...

    @property
    @abc.abstractmethod
    def version(self) -> int:
        """The schema version (0: not a ctmanager store yet)."""

    @abc.abstractmethod
    def set_version(self, version: int) -> None:
        """Record the schema version, inside the transaction that took the store
        there (store/versions.py)."""

    @abc.abstractmethod
    def transaction(self, *, config: bool = True, fenced: bool = True,
                    serialised: bool = True) -> contextlib.AbstractContextManager[Store]:
        """A write transaction: all or nothing. Takes the write lock up front so a
        read-then-write (check-then-act, e.g. IP allocation) cannot race another
        writer. `config`: this is a configuration change (bumps the counter).
        `fenced`: `fence` (if set) runs first and may refuse the whole transaction;
        only the lease's own writes go unfenced. `serialised=False`: one statement
        that is atomic by itself (a lease renewal): on PostgreSQL it does not queue
        behind the DC's write lock (SQLite has only the one lock)."""

    @abc.abstractmethod
    def snapshot(self) -> contextlib.AbstractContextManager[Store]:
        """A read transaction: every read inside sees the same committed state (a
        `ct rm` landing between two reads cannot make a CT look unplaced)."""

    @abc.abstractmethod
    def execute(self, sql: str, params: Params = ()) -> Any:
        """A cursor: fetchall(), fetchone(), rowcount, iteration."""

    @abc.abstractmethod
    def executemany(self, sql: str, rows: Iterable[Params]) -> None: ...

    @abc.abstractmethod
    def _try_lock(self, name: str) -> Callable[[], None] | None:
        """Take the named lock if it is free now: its release function, or None."""

    def now(self) -> float:
        """The store's clock (epoch seconds): what every writer and reader of
        report ages compares with. One machine for SQLite: this one's."""
        return time.time()

    # ---- the same on every backend ------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str, wait: float | None = None) -> Iterator[bool]:
        """An exclusive lock shared by every process on this store (the DNS
        publisher's: a CLI edit and the manager's DNS worker must not send the same
        change twice). Yields False if it was not free within `wait` seconds (None:
        wait as long as it takes). Held across transactions; re-entrant per Store."""
        if name in self._held:
            yield True
            return
        deadline = None if wait is None else time.monotonic() + wait
        while (release := self._try_lock(name)) is None:
            if deadline is not None and time.monotonic() >= deadline:
                yield False
                return
            time.sleep(LOCK_POLL)  # neither flock nor an advisory lock has a timed wait
        self._held.add(name)
        try:
            yield True
        finally:
            self._held.discard(name)
            release()

    def query(self, sql: str, params: Params = ()) -> list[Any]:
        rows: list[Any] = self.execute(sql, params).fetchall()
        return rows

    def one(self, sql: str, params: Params = ()) -> Any:
        return self.execute(sql, params).fetchone()

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
        value = self.get_meta(CONFIG_VERSION)
        return int(value) if value and is_digits(value) else 0

    def _bump_config(self) -> None:
        self.execute("INSERT INTO meta(key, value) VALUES (?, '1') ON CONFLICT(key) DO UPDATE SET "
                     "value = CAST(CAST(meta.value AS INTEGER) + 1 AS TEXT)", (CONFIG_VERSION,))
