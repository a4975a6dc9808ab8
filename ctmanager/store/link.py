"""A store reached over a link that may be down: the simulator's store node.
Each simulated manager reaches the one real store (SQLite in memory, on
simulated true time) through its own link, which fails like a lost connection
when `reachable()` says no (the network between that manager and the node
"store" cut either way, or the store down).

Every call a manager makes goes through here and is checked: statements,
transactions, snapshots, the clock. A failure is the StoreError the real
backends raise ("cannot reach the store"), so the daemon's own handling of
store trouble is what runs. The simulator is single-threaded, so a link cannot
fail in the middle of one call; a transaction is all or nothing as on a real
server.

Each manager keeps its own fence (Store.fence): it is put on the shared store
for the length of that manager's transaction only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from ..errors import StoreError
from .db import Params, Store


class StoreLink:
    def __init__(self, store: Store, reachable: Callable[[], bool]) -> None:
        self.real = store
        self.reachable = reachable
        self.fence: Callable[[Store], None] | None = None
        self.cache = store.cache
        self.lost_locks: set[str] = set()  # no session locks in the simulator

    def _up(self) -> None:
        if not self.reachable():
            raise StoreError(f"{self.where}: cannot reach the store (simulated: link or store down); try again")

    # ---- what the manager uses of a Store --------------------------------
    @property
    def where(self) -> str:
        return "sim-store"

    @property
    def path(self) -> str:
        return "sim-store"

    @property
    def backend(self) -> str:
        return self.real.backend

    @property
    def NOW_SQL(self) -> str:  # noqa: N802 - the Store attribute's name
        return self.real.NOW_SQL

    def transaction(self, *, config: bool = True, fenced: bool = True,
                    serialised: bool = True) -> contextlib.AbstractContextManager[StoreLink]:
        return _Transaction(self, lambda: self.real.transaction(config=config, fenced=fenced, serialised=serialised))

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[StoreLink]:
        self._up()
        with self.real.snapshot():
            yield self

    def execute(self, sql: str, params: Params = ()) -> Any:
        self._up()
        return self.real.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        self._up()
        self.real.executemany(sql, rows)

    def query(self, sql: str, params: Params = ()) -> list[Any]:
        self._up()
        return self.real.query(sql, params)

    def one(self, sql: str, params: Params = ()) -> Any:
        self._up()
        return self.real.one(sql, params)

    def get_meta(self, key: str) -> str | None:
        self._up()
        return self.real.get_meta(key)

    def set_meta(self, key: str, value: str) -> None:
        self._up()
        self.real.set_meta(key, value)

    def event(self, kind: str, subject: str, detail: str = "") -> None:
        self._up()
        self.real.event(kind, subject, detail)

    def config_version(self) -> int:
        self._up()
        return self.real.config_version()

    def now(self) -> float:
        self._up()
        return self.real.now()

    def close(self) -> None:
        pass  # the store outlives every manager


class _Transaction:
    """StoreLink.transaction: the real store's, with this manager's fence on it
    for its length (a class, not a generator: the loop takes ~5 a second)."""

    __slots__ = ("link", "make", "real")

    def __init__(self, link: StoreLink, make: Callable[[], contextlib.AbstractContextManager[Store]]) -> None:
        self.link, self.make = link, make
        self.real: contextlib.AbstractContextManager[Store] | None = None

    def __enter__(self) -> StoreLink:
        link = self.link
        link._up()
        link.real.fence = link.fence
        try:
            self.real = self.make()
            self.real.__enter__()
        except BaseException:
            link.real.fence = None
            raise
        return link

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            assert self.real is not None
            self.real.__exit__(kind, exc, tb)
        finally:
            self.link.real.fence = None
