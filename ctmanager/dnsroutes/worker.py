"""The manager daemon's DNS publisher, stepped by the leader's own loop (a
manager.ports.Worker): the loop decides when to work, with time as an argument,
and the I/O (sync and verify against the DNS server, with a store connection of
their own) runs as a job on a background runner, so a slow or dead DNS server
never stalls the loop. Its outcome is taken in (logged, backoff set) at the next
step.

It syncs when poked (the daemon pokes it after every configuration reload and
when it takes the lease: an edit whose CLI could not publish, or one made
elsewhere), retries pending changes with backoff (1 s, doubling to 60 s) while
the server is away, and verifies the zones (AXFR) every `verify_every` seconds,
putting drifted records back. In the steady state it does nothing: no zone
transfer per cycle, no queries.

In a manager pair only the leader publishes: a standby's step starts nothing,
and each job's store writes are fenced by the lease `lease_of` gives at submit
time (a job still running when its manager stops leading has them refused)."""

from __future__ import annotations

import functools
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import CtmError
from ..store import lease as leases
from ..store import open_store
from ..store.db import Locator
from . import sync

log = logging.getLogger(__name__)
MIN_BACKOFF, MAX_BACKOFF = 1.0, 60.0
IN_FLIGHT_POLL = 0.1  # s between the loop's looks for a running job's outcome


class Runner(Protocol):
    """manager.ports.Runner (this layer cannot import the manager's)."""

    def submit(self, job: Callable[[], Any], done: Callable[[Any], None], name: str = "job") -> None: ...


@dataclass
class Synced:
    """A job's outcome: the drift its verify repaired (if it verified), then the sync's report."""

    report: sync.SyncReport
    drift: list[str] = field(default_factory=list)


class DnsWorker:
    def __init__(self, store_path: Locator, runner: Runner, verify_every: float = 3600.0,
                 rack: int | None = None) -> None:
        """`rack`: publish only what that rack's manager owns (None: the whole DC)."""
        self.store_path, self.runner, self.verify_every, self.rack = store_path, runner, verify_every, rack
        self.lease_of: Callable[[], leases.Lease | None] | None = None  # set by the manager daemon
        self._wanted = False  # poked: sync at the next step
        self._next_verify: float | None = None  # (None: set by the first step, from its `now`)
        self._backoff: float | None = None  # set while changes are pending behind an error
        self._retry_at = math.inf
        self._in_flight = False
        self._leading = False
        self._outcomes: deque[Synced | Exception] = deque()  # appended by the job's thread (atomic)
        self._last_error = ""

    def poke(self) -> None:
        """Something may have changed: sync at the next step (kept while a job runs, or while a standby)."""
        self._wanted = True

    def due(self, now: float) -> float:
        if self._in_flight:
            return now + IN_FLIGHT_POLL
        if not self._leading:
            return math.inf
        if self._wanted:
            return now
        at = min(self._retry_at, self._next_verify if self._next_verify is not None else now)
        return max(now, at)

    def step(self, now: float, leading: bool) -> None:
        while self._outcomes:
            self._take(self._outcomes.popleft(), now)
        if self._next_verify is None:
            self._next_verify = now + self.verify_every
        lease = self.lease_of() if self.lease_of is not None and leading else None
        self._leading = leading and (self.lease_of is None or lease is not None)
        if not self._leading:
            self._next_verify = now + self.verify_every  # (a standby verifies nothing; the one that leads will)
            return
        if self._in_flight or now < self.due(now):
            return
        verify = now >= self._next_verify
        if verify:
            self._next_verify = now + self.verify_every
        self._wanted, self._retry_at, self._in_flight = False, math.inf, True
        self.runner.submit(functools.partial(self._job, lease, verify), self._done, name="dns")

    def close(self) -> None:
        """Nothing held between jobs (each opens its own store connection)."""

    def _done(self, outcome: Synced | Exception) -> None:
        self._outcomes.append(outcome)  # the job's thread: only queue; the loop takes it in

    def _take(self, outcome: Synced | Exception, now: float) -> None:
        """A finished job, in the loop: say what it did, and set the backoff."""
        self._in_flight = False
        if isinstance(outcome, Exception):  # (the job catches its own; a runner's word for anything else)
            outcome = Synced(sync.SyncReport(error=f"unexpected {type(outcome).__name__}: {outcome}"))
        for line in outcome.drift:
            log.warning("dns drift repaired: %s", line)
        report = outcome.report
        if report.applied:
            log.info("dns: published %d change(s)", len(report.applied))
        for _, why in report.conflicts:
            log.warning("dns conflict: %s", why)
        for why in report.collisions:
            log.warning("dns collision (left out): %s", why)
        if report.error:
            self._backoff = min((self._backoff or MIN_BACKOFF / 2) * 2, MAX_BACKOFF)
            self._retry_at = now + self._backoff
            if report.error != self._last_error:
                log.error("dns: %d change(s) pending: %s; retrying with backoff", len(report.pending), report.error)
            self._last_error = report.error
        else:
            if self._last_error:
                log.info("dns: the server answers again; nothing pending")
            self._backoff, self._retry_at, self._last_error = None, math.inf, ""

    def _job(self, lease: leases.Lease | None, verify: bool) -> Synced:
        """On the runner's thread: verify (when due) and sync, fenced by `lease`."""
        drift: list[str] = []
        try:
            with open_store(self.store_path) as store:
                if lease is not None:
                    store.fence = lambda s, held=lease: leases.check(s, held)
                server = sync.server_of(store)
                if server is None:
                    return Synced(sync.SyncReport())
                if verify:
                    drift = sync.verify(store, server, rack=self.rack).drift
                return Synced(sync.sync(store, server, rack=self.rack), drift)
        except CtmError as exc:  # a DNS error in verify, a bad key file, store trouble
            return Synced(sync.SyncReport(error=str(exc)), drift)
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the publishing: say it, retry later
            return Synced(sync.SyncReport(error=f"unexpected {type(exc).__name__}: {exc}"), drift)
