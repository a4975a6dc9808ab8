"""One manager's side of the rack's lease (store/lease.py): standby, candidate,
leader, and back.

A standby tries to take the lease when it could lead: it hears a quorum of the
rack's voters (counting the manager side it would become) and is not holding
off. A leader renews every ttl/3 and believes its lease only until `ttl - margin`
after it *sent* its last successful renewal, by its own monotonic clock: the
store's expiry lies at least `ttl` after that send, so the leader stops acting
before any standby can take over, whatever the store's or its own wall clock
says. A renewal the store refuses (LeaseLost) ends leadership at once; one that
cannot reach the store is retried until the belief runs out.

`step()` is driven by the daemon's loop with the monotonic time; it returns what
changed ("gained" or "lost: why"), so the daemon starts or stops acting. Store
calls are the only I/O here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import StoreError
from ..store import lease as leases
from ..store.db import Store
from ..store.lease import Lease, LeaseLost

RETRY = 0.25  # s between tries of a renewal the store did not answer
POLL = 0.25  # s between a standby's looks at the lease (cheap: one row)


def takeover_budget(fence_after: float, report_interval: float) -> float:
    """The longest lease ttl that lets a standby lead before HNs that need the
    manager's vote fence: their last mutual contact with the dead leader may be
    a report interval old, and they fence a report round early (fencing/guard)."""
    return fence_after - 2 * report_interval - POLL


@dataclass
class Change:
    gained: bool
    why: str


class Leadership:
    def __init__(self, store: Store, rack: int, name: str, instance: str, detail: str, ttl: float,
                 mono: Callable[[], float]) -> None:
        self.store, self.rack, self.name, self.instance, self.detail = store, rack, name, instance, detail
        self.mono = mono
        # Take over a live lease of an earlier run under our name at once: only while
        # the name's lock is ours (cli/loop.py sets it; the store says if it was lost).
        self.own_name = False
        self.ttl = ttl
        self.margin = ttl / 6
        self.lease: Lease | None = None
        self.valid_until = 0.0  # monotonic: the leader acts only before this
        self.next_renew = 0.0
        self.next_try = 0.0
        self.hold_off_until = 0.0
        self.last_epoch = 0  # the newest epoch this manager led with

    def leading(self) -> bool:
        return self.lease is not None and self.mono() < self.valid_until

    @property
    def epoch(self) -> int:
        return self.lease.epoch if self.lease is not None else 0

    def due_in(self) -> float:
        """Seconds until this side of the lease needs a look: a leader's renewal (or
        the end of its belief), a standby's next look at a free lease."""
        mono = self.mono()
        if self.lease is not None:
            return max(min(self.next_renew, self.valid_until) - mono, 0.0)
        return max(max(self.next_try, self.hold_off_until) - mono, 0.0) or POLL

    def step(self, can_lead: bool | Callable[[], bool]) -> Change | None:
        """`can_lead`: or a function that says so, asked only when a standby would try."""
        mono = self.mono()
        if self.lease is not None:
            return self._keep(mono)
        if mono < self.hold_off_until or mono < self.next_try or not (
                can_lead() if callable(can_lead) else can_lead):
            return None
        self.next_try = mono + POLL
        try:
            got = leases.acquire(self.store, self.rack, self.name, self.instance, self.detail, self.ttl,
                                 own_name=self.own_name)
        except StoreError:
            return None  # the daemon's own store steps say what is wrong with the store
        if got is None:
            return None
        self._believe(got, mono)  # `mono` was read before the request went out
        self.last_epoch = got.epoch
        return Change(True, f"took the lease of rack-{self.rack} with epoch {got.epoch}")

    def _keep(self, mono: float) -> Change | None:
        assert self.lease is not None
        if mono >= self.valid_until:
            return self._lose(f"could not renew the lease within {self.ttl - self.margin:.1f}s")
        if mono < self.next_renew:
            return None
        sent = mono
        try:
            lease = leases.renew(self.store, self.lease, self.ttl)
        except LeaseLost as exc:
            return self._lose(str(exc).split(": ", 1)[-1])
        except StoreError:
            self.next_renew = mono + RETRY
            return None
        self._believe(lease, sent)
        return None

    def _believe(self, lease: Lease, sent: float) -> None:
        self.lease = lease
        self.valid_until = sent + self.ttl - self.margin
        self.next_renew = sent + self.ttl / 3

    def _lose(self, why: str) -> Change:
        self.lease = None
        self.next_try = 0.0
        return Change(False, why)

    def step_down(self, why: str, hold_off: float) -> Change | None:
        """Stop leading now and end the lease in the store (if it can be reached),
        so a standby may take the rack at once; try again only after `hold_off` s."""
        if self.lease is None:
            return None
        lease, change = self.lease, self._lose(why)
        self.hold_off_until = self.mono() + hold_off
        try:
            leases.release(self.store, lease)
        except StoreError:
            pass  # it expires by itself
        return change

    def check(self, store: Store) -> None:
        """The store's fence (Store.fence) for this manager's writes: refused
        unless it leads with a lease the store still holds."""
        if not self.leading():
            raise LeaseLost(f"{store.where}: {self.name} does not lead rack-{self.rack}: it writes nothing")
        assert self.lease is not None
        leases.check(store, self.lease)
