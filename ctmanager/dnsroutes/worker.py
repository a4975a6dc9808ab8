"""The manager daemon's DNS publisher: a thread, so a slow or dead DNS server never
stalls the reconcile loop. It syncs when the store changed (an edit whose CLI could
not publish, or one made elsewhere), retries pending changes with backoff (1 s,
doubling to 60 s) while the server is away, and verifies the zones (AXFR) every
`verify_every` seconds, putting drifted records back. In the steady state it does
nothing: no zone transfer per cycle, no queries.

In a manager pair only the leader publishes: `lease_of` says which lease this
process leads with (None: it is a standby, and the worker waits), and every
write the worker makes to the store is fenced by that lease."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..errors import CtmError
from ..store import lease as leases
from ..store import open_store
from ..store.db import Locator
from . import sync

log = logging.getLogger(__name__)
MAX_BACKOFF = 60.0


class DnsWorker(threading.Thread):
    def __init__(self, store_path: Locator, verify_every: float = 3600.0, rack: int | None = None) -> None:
        """`rack`: publish only what that rack's manager owns (None: the whole DC)."""
        super().__init__(name="dns", daemon=True)
        self.store_path, self.verify_every, self.rack = store_path, verify_every, rack
        self.wake, self.stopping = threading.Event(), threading.Event()
        self._last_error = ""
        self.lease_of: Callable[[], leases.Lease | None] | None = None  # set by the manager daemon

    def poke(self) -> None:
        self.wake.set()

    def run(self) -> None:
        backoff: float | None = None  # set while changes are pending behind an error
        next_verify = time.monotonic() + self.verify_every
        while not self.stopping.is_set():
            timeout = min(backoff or self.verify_every, max(next_verify - time.monotonic(), 0.0))
            self.wake.wait(timeout)
            self.wake.clear()
            if self.stopping.is_set():
                return
            lease = self.lease_of() if self.lease_of is not None else None
            if self.lease_of is not None and lease is None:
                next_verify = time.monotonic() + self.verify_every  # (else the wait's timeout would be 0)
                continue  # a standby publishes nothing; the manager pokes the worker when it leads
            try:
                with open_store(self.store_path) as store:
                    if lease is not None:
                        store.fence = lambda s, held=lease: leases.check(s, held)
                    server = sync.server_of(store)
                    if server is None:
                        next_verify = time.monotonic() + self.verify_every
                        continue
                    if time.monotonic() >= next_verify:
                        next_verify = time.monotonic() + self.verify_every
                        report = sync.verify(store, server, rack=self.rack)
                        for line in report.drift:
                            log.warning("dns drift repaired: %s", line)
                    report = sync.sync(store, server, rack=self.rack)
            except CtmError as exc:  # a DNS error in verify, a bad key file, store trouble
                report = sync.SyncReport(error=str(exc))
            except Exception as exc:  # noqa: BLE001 - a bug must not end the thread: say it, retry later
                report = sync.SyncReport(error=f"unexpected {type(exc).__name__}: {exc}")
            if report.applied:
                log.info("dns: published %d change(s)", len(report.applied))
            for _, why in report.conflicts:
                log.warning("dns conflict: %s", why)
            if report.error:
                backoff = min((backoff or 0.5) * 2, MAX_BACKOFF)
                if report.error != self._last_error:
                    log.error("dns: %d change(s) pending: %s; retrying with backoff", len(report.pending), report.error)
                self._last_error = report.error
            else:
                if self._last_error:
                    log.info("dns: the server answers again; nothing pending")
                backoff, self._last_error = None, ""
