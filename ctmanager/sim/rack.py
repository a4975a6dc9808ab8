"""A simulated rack: HNs with agents, a manager, a network, the truth of which
CT runs where, the event log, and the invariants checked as it runs.

Invariants (each broken one is recorded with the time):
  - no CTID is UP on two HNs at any instant;
  - the manager acts only from a majority side: when it issues an action, a
    majority of voters (itself included) was really reachable both ways, and
    alive, within the last `fence_after` + 2 report intervals;
  - `converged()` (checked at the end of a schedule, after the faults are
    healed): every ADMST UP CT runs on exactly one HN.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..fencing.quorum import MANAGER, is_quorum
from ..fencing.timers import FenceTimers
from ..reconcile.state import Action, Settings
from ..store import lease as leases
from ..store import loop as persist
from ..wire.reports import Report
from . import dcstore
from .agent import SimAgent
from .manager import SimManager
from .world import Clock, Network, Weather


@dataclass(frozen=True)
class Setup:
    hns: int = 3
    cts: int = 6
    seed: int = 0
    interval: float = 1.0
    timers: FenceTimers = FenceTimers()
    stale_after: float = 3.0
    reboot_after: float | None = 60.0  # s a reset node takes to boot; None: stays off until `power on`
    fence_command: bool = False  # the manager has a fence command (a BMC on its own network)
    skew: float = 0.0  # s: every node's clock is off by up to this much, either way (seeded)
    weather: Weather = field(default_factory=Weather)


class SimRack:
    slot = 101

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.clock = Clock()
        self.rng = random.Random(setup.seed)
        self.net = Network(self.clock, self.rng, Weather(**setup.weather.__dict__))
        self.timers, self.interval = setup.timers, setup.interval
        self.settings = Settings(stale_after=setup.stale_after)
        names = [f"hn-{self.slot}-{i}" for i in range(1, setup.hns + 1)]
        self.voters = frozenset(names) | {MANAGER}
        self.store = dcstore.rack_store(setup.hns, setup.cts, lambda: self.clock.now)  # a real store, true time
        self.configured = persist.configured(self.store, dcstore.dc(), self.slot)
        self.lines: list[str] = []
        self.violations: list[str] = []
        self.up: dict[int, set[str]] = {}  # the truth: CTID -> HNs where it runs
        self.last_link: dict[str, float] = {}  # voter -> last time it was reachable from the manager, both ways
        offsets = {n: self.rng.uniform(-setup.skew, setup.skew) if setup.skew else 0.0 for n in [*names, MANAGER]}
        self.agents = {n: SimAgent(self, n, frozenset(names), setup.timers, setup.interval, setup.reboot_after,
                                   offsets[n]) for n in names}
        self.manager = SimManager(self, MANAGER, offsets[MANAGER])
        self._hearers = [*((n, a.hear) for n, a in sorted(self.agents.items())), (MANAGER, self.manager.hear)]

    # ---- the network ------------------------------------------------------
    def broadcast(self, src: str, report: Report) -> None:
        self.net.send_all(src, self._hearers, report)

    # ---- the truth and the log ---------------------------------------------
    def log(self, who: str, what: str) -> None:
        self.lines.append(f"{self.clock.now:8.2f} {who:<9} {what}")

    def ct_up(self, hn: str, ctid: int) -> None:
        where = self.up.setdefault(ctid, set())
        if where - {hn}:
            self.violation(f"CT {ctid} UP on {hn} while UP on {', '.join(sorted(where - {hn}))}")
        where.add(hn)
        self.log(hn, f"CT {ctid} UP")

    def ct_down(self, hn: str, ctid: int) -> None:
        self.up.get(ctid, set()).discard(hn)

    def violation(self, what: str) -> None:
        self.violations.append(f"{self.clock.now:.2f}: {what}")
        self.log("INVARIANT", what)

    def alarm(self, what: str) -> None:
        self.log(MANAGER, f"ALARM {what}")

    def _reachable(self, v: str) -> bool:
        if v == MANAGER:
            return self.manager.alive
        a = self.agents[v]
        return a.alive and a.powered and self.net.up(MANAGER, v) and self.net.up(v, MANAGER)

    def links_changing(self) -> None:
        """Call before any change to links or liveness: remembers who was reachable until now."""
        now = self.clock.now
        for v in self.voters:
            if self._reachable(v):
                self.last_link[v] = now

    def check_majority(self, action: Action) -> None:
        now, horizon = self.clock.now, self.timers.fence_after + 2 * self.interval
        side = {v for v in self.voters if self._reachable(v) or now - self.last_link.get(v, -1e9) <= horizon}
        if not is_quorum(side, self.voters):
            self.violation(f"the manager acted from a minority side ({len(side)} of {len(self.voters)} voters): {action}")

    def check_lease(self, manager: SimManager, epoch: int, what: str) -> None:
        """A manager acts (or votes) only while the store says it holds the lease
        of `epoch`: so no two managers ever act for the rack at once."""
        lease = leases.current(self.store, self.slot)
        if lease is None or lease.epoch != epoch or not lease.live(self.clock.now) or \
                lease.instance != manager.daemon.boot_id:
            self.violation(f"{manager.name} acted without the lease (epoch {epoch}; the store: "
                           f"{lease.holder if lease else 'none'} epoch {lease.epoch if lease else 0}): {what}")

    def converged(self) -> list[str]:
        """What is wrong now with where CTs run (empty: every ADMST UP CT runs exactly once)."""
        wrong = []
        for ctid, ct in sorted(self.configured.cts.items()):
            n = len(self.up.get(ctid, ()))
            if ct.admst == "UP" and n != 1:
                wrong.append(f"CT {ctid} runs on {n} HNs")
        return wrong

    def run_until(self, t: float) -> None:
        self.clock.run_until(t)
