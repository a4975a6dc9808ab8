"""The manager daemon's side of the rack's lease (manager/leadership.py keeps
the lease itself): when to try for it, what taking over and stepping down do
to the loop, the check-in row, and a clean stop. A mixin of `Manager`
(manager/daemon.py), which holds the state these methods use.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import StoreError
from ..store import lease as leases
from ..store import loop as persist
from ..wire.keys import key_ids
from .core import RUNNING, Core
from .leadership import Change, Leadership

if TYPE_CHECKING:
    from ..store.db import Store
    from ..wire.reports import Report
    from .config import ManagerConfig
    from .ports import Events, Transport

PRUNE_EVERY = 600.0  # s between retention passes over the journal and events
CHECK_IN_EVERY = 1.0  # s between a manager's check-ins (`manager status` calls it down after 3 missed)


class Leading:
    # What `Manager` provides (manager/daemon.py).
    store: Store
    config: ManagerConfig
    events: Events
    transport: Transport
    clock: Callable[[], float]
    leadership: Leadership
    core: Core | None
    dns: Any
    results: deque[tuple[int, Any, int]]
    unjournaled: list[tuple[int, Any]]
    fence_results: deque[tuple[str, int, str]]
    pending_reports: dict[str, tuple[Report, float]]
    _observed_rows: dict[int, persist.ObservedRow]
    _saved_reports: dict[str, tuple[Any, float, Any]]
    _config_token: int | None
    boot_id: str
    holder: str
    heard_at: float
    quorum_at: float
    started_at: float
    next_beat: float
    next_full: float
    next_check_in: float
    next_prune: float
    stopping: bool
    stop_moves: Callable[[], None]  # Workflows'

    def step(self, now: float, act: bool = True) -> float:
        raise NotImplementedError  # Manager's

    def _reload_if_changed(self, now: float, warm: Any = None) -> bool:
        raise NotImplementedError  # Reloading's (manager/reloading.py)

    def lease(self) -> leases.Lease | None:
        """The lease this manager leads with (None: it does not lead). Any thread."""
        lease = self.leadership.lease
        return lease if lease is not None and self.leadership.leading() else None

    @property
    def leading(self) -> bool:
        return self.leadership.leading()

    @property
    def busy(self) -> dict[tuple[int, str], float]:
        return self.core.busy if self.core else {}

    def _lead(self, now: float) -> None:
        assert self.core is not None
        if self.leading and self.leadership.mono() - self.quorum_at >= self.config.timers.fence_after:
            change = self.leadership.step_down(f"no quorum for {self.config.timers.fence_after:g}s; the lease is "
                                               "released for a manager that can lead", self.config.lease_ttl)
        else:
            membership = self.core.membership
            change = self.leadership.step(lambda: membership.hears_quorum(now))
        if change is not None:
            (self._took_over if change.gained else self._stepped_down)(now, change)

    def _took_over(self, now: float, change: Change) -> None:
        """Lead from now on: resume the journal of the rack's intents, and start as
        a restarted manager does (wait for quorum and dead_after), but with the
        observed state this standby kept warm."""
        slot, old = self.config.slot, self.core
        warm = old.observed if old is not None else None
        self.core, self._config_token = None, None
        try:
            with self.store.transaction(config=False):
                lost = persist.interrupted(self.store, now, slot)
            self._reload_if_changed(now, warm)
        except StoreError as exc:  # try again later (a takeover that fails at once would make epoch after epoch)
            self.core = old
            self.leadership.step_down(f"cannot take over: {exc}", self.config.lease_ttl / 2)
            self.events.leadership(f"could not take over rack-{slot}: {exc}")
            return
        self.events.leadership(f"leads rack-{slot}: {change.why}")
        if lost:
            self.events.leadership(f"resuming: {len(lost)} action(s) were in flight when the last leader stopped "
                                   f"({'; '.join(map(str, lost[:5]))}); their CTs wait until each HN shows it "
                                   "settled this epoch, then are replanned")
            if self.core is not None:
                self.core.await_settled([(i.ctid, i.hn) for i in lost], self.leadership.epoch,
                                        now + self.config.action_timeout)
        if old is not None and self.core is not None:
            # Whom we heard and when is true whoever led: the first heartbeat says so, and
            # an HN counts us in at once (contact counts only from now: mutual_at is new).
            self.core.membership.heard_at.update(old.membership.heard_at)
        self._observed_rows.clear()
        self._saved_reports.clear()
        self.pending_reports.update({hn: (r, now) for hn, r in (warm.reports if warm else {}).items()})
        self.started_at, self.quorum_at = now, self.leadership.mono()
        self.next_beat = self.next_full = self.next_check_in = now
        self.next_prune = now + PRUNE_EVERY
        if self.dns is not None:
            self.dns.poke()

    def _stepped_down(self, now: float, change: Change) -> None:
        self.events.leadership(f"no longer leads rack-{self.config.slot}: {change.why}; standby")
        if self.results or self.unjournaled:
            self.events.leadership(f"{len(self.results) + len(self.unjournaled)} finished action(s) of the lost "
                                   "epoch are not journaled; the next leader replans them")
        self.results.clear()
        self.unjournaled.clear()
        self.fence_results.clear()
        self.stop_moves()
        if self.core is not None:
            self.core.busy.clear()  # a standby tracks nothing in flight; the next Core starts afresh anyway
        self.next_check_in = now

    def _twin(self, now: float) -> None:
        """The store connection dropped and, meanwhile, another process took this
        manager's name lock: another run under the same name. Stop at once."""
        self.events.leadership(f"another run of {self.config.name} holds its lock "
                               f"({', '.join(sorted(self.store.lost_locks))}) since the store connection dropped: "
                               "stopping")
        change = self.leadership.step_down("another run under this name", 0.0)
        if change is not None:
            self._stepped_down(now, change)
        self.stopping = True

    def _check_in(self, now: float, role: str | None = None) -> None:
        self.next_check_in = now + CHECK_IN_EVERY
        heard = None if self.heard_at < -1e17 else max(now - self.heard_at, 0.0)
        leases.check_in(self.store, self.config.slot, self.config.name, self.boot_id, self.holder,
                        role or ("leader" if self.leading else "standby"), self.leadership.last_epoch, heard,
                        self.config.lease_ttl, __version__, key_ids(self.config.key))

    def _drain(self) -> None:
        """Stopping: start nothing new, but wait (at most action_timeout, still
        renewing the lease) for the actions in flight and journal them, so the next
        leader does not find them half done."""
        deadline = self.clock() + self.config.action_timeout
        while self.leading and RUNNING in self.busy.values() and self.clock() < deadline:
            self.step(self.clock(), act=False)
            self.transport.wait(0.05)
