"""A simulated rack: HNs with agents, one or more managers, the store as a
node of its own, a network, the truth of which CT runs where, the event log,
and the invariants checked as it runs.

Nodes: the HNs (hn-101-1 ...), the managers ("manager" when there is one;
"mgr-a", "mgr-b" ... when there are more) and "store". Voters: the HNs and the
one voter "manager", whichever manager leads.

Invariants (each broken one is recorded with the time):
  - no CTID is UP on two HNs at any instant;
  - a manager acts only from a majority side: when it issues an action, a
    majority of voters (itself included) was really reachable both ways from
    it, and alive, within the last `fence_after` + 2 report intervals;
  - a manager acts and sends heartbeats only while the store says it holds the
    rack's lease of that epoch (so two managers never act at once);
  - `converged()` (checked at the end of a schedule, after the faults are
    healed): every ADMST UP CT runs on exactly one HN, and no intent was left
    pending (every one finished, or closed and replanned by a later leader).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..fencing.quorum import MANAGER, is_quorum
from ..fencing.timers import FenceTimers
from ..reconcile.state import Action, Settings
from ..store import lease as leases
from ..store import loop as persist
from ..wire.reports import Report
from . import dcstore
from .agent import SimAgent
from .manager import ACTION_TIMEOUT, SimManager
from .world import STORE, Clock, Network, Weather

if TYPE_CHECKING:
    from .ports import DcView, Lessee


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
    managers: int = 1  # "manager"; with more, "mgr-a", "mgr-b" ... (one leads)
    skew: float = 0.0  # s: every node's clock is off by up to this much, either way (seeded)
    weather: Weather = field(default_factory=Weather)


class SimRack:
    slot = 101

    def __init__(self, setup: Setup, dc: DcView | None = None, slot: int = 101) -> None:
        """`dc`: a rack of a simulated DC (sim/dc.py), sharing its clock, network,
        store, storage nodes, log and truth; else a world of its own."""
        self.setup, self.dc, self.slot = setup, dc, slot
        self.timers, self.interval = setup.timers, setup.interval
        self.settings = Settings(stale_after=setup.stale_after)
        names = [f"hn-{self.slot}-{i}" for i in range(1, setup.hns + 1)]
        self.voters = frozenset(names) | {MANAGER}
        self.store_up = True
        if dc is None:
            self.clock = Clock()
            self.rng = random.Random(setup.seed)
            self.net = Network(self.clock, self.rng, Weather(**setup.weather.__dict__))
            self.store = dcstore.rack_store(setup.hns, setup.cts, lambda: self.clock.now)  # a real store, true time
            self.lines: list[str] = []
            self.violations: list[str] = []
            self.up: dict[int, set[str]] = {}  # the truth: CTID -> HNs where it runs
            mgrs = [MANAGER] if setup.managers == 1 else [f"mgr-{chr(ord('a') + i)}" for i in range(setup.managers)]
        else:
            self.clock, self.rng, self.net, self.store = dc.clock, dc.rng, dc.net, dc.store
            self.lines, self.violations, self.up = dc.lines, dc.violations, dc.up
            mgrs = [f"mgr-{slot}-{chr(ord('a') + i)}" for i in range(setup.managers)]
        self.configured = persist.configured(self.store, dcstore.dc(), self.slot)
        # (manager, voter) -> last time the voter was reachable from that manager, both ways
        self.last_link: dict[tuple[str, str], float] = {}
        self.nodes = frozenset([*names, *mgrs, STORE])
        offsets = {n: self.rng.uniform(-setup.skew, setup.skew) if setup.skew else 0.0 for n in [*names, *mgrs]}
        self.agents = {n: SimAgent(self, n, frozenset(names), setup.timers, setup.interval, setup.reboot_after,
                                   offsets[n]) for n in names}
        self.managers = {n: SimManager(self, n, offsets[n]) for n in mgrs}
        self._hearers = [*((n, a.hear) for n, a in sorted(self.agents.items())),
                         *((n, m.hear) for n, m in self.managers.items())]

    # ---- the network ------------------------------------------------------
    def broadcast(self, src: str, report: Report) -> None:
        self.net.send_all(src, self._hearers, report)

    # ---- the truth and the log ---------------------------------------------
    def log(self, who: str, what: str) -> None:
        self.lines.append(f"{self.clock.now:8.2f} {who:<9} {what}")

    def ct_up(self, hn: str, ctid: int, storage: str = "") -> None:
        where = self.up.setdefault(ctid, set())
        if where - {hn}:
            self.violation(f"CT {ctid} UP on {hn} while UP on {', '.join(sorted(where - {hn}))}")
        where.add(hn)
        self.log(hn, f"CT {ctid} UP")
        if self.dc is not None and storage:
            self.dc.data.started(storage, ctid, hn)

    def ct_down(self, hn: str, ctid: int, storage: str = "") -> None:
        self.up.get(ctid, set()).discard(hn)
        if self.dc is not None and storage:
            self.dc.data.write(storage, ctid, hn)

    def violation(self, what: str) -> None:
        self.violations.append(f"{self.clock.now:.2f}: {what}")
        self.log("INVARIANT", what)

    def alarm(self, what: str) -> None:
        self.log(MANAGER, f"ALARM {what}")

    @property
    def manager(self) -> SimManager:
        """The first manager (the only one of a one-manager rack)."""
        return next(iter(self.managers.values()))

    def leader(self) -> SimManager | None:
        """The live manager the store says leads now (None: none does)."""
        lease = leases.current(self.store, self.slot)
        if lease is None or not lease.live(self.clock.now):
            return None
        return next((m for m in self.managers.values() if m.alive and m.daemon.boot_id == lease.instance), None)

    def reaches_store(self, manager: str) -> bool:  # asked before every store call: Network.up inlined
        cut = self.net.cut
        return self.store_up and (manager, STORE) not in cut and (STORE, manager) not in cut

    def _reachable(self, manager: str, v: str) -> bool:
        if v == MANAGER:
            return self.managers[manager].alive
        a = self.agents[v]
        return a.alive and a.powered and self.net.up(manager, v) and self.net.up(v, manager)

    def links_changing(self) -> None:
        """Call before any change to links or liveness: remembers who was reachable until now."""
        now = self.clock.now
        for m in self.managers:
            for v in self.voters:
                if self._reachable(m, v):
                    self.last_link[m, v] = now

    def check_majority(self, manager: str, action: Action) -> None:
        now, horizon = self.clock.now, self.timers.fence_after + 2 * self.interval
        side = {v for v in self.voters
                if self._reachable(manager, v) or now - self.last_link.get((manager, v), -1e9) <= horizon}
        if not is_quorum(side, self.voters):
            self.violation(f"{manager} acted from a minority side ({len(side)} of {len(self.voters)} voters): "
                           f"{action}")

    def check_lease(self, manager: Lessee, epoch: int, what: str) -> None:
        """A manager acts (or votes) only while the store says it holds the lease
        of `epoch`: so no two managers ever act for the rack at once."""
        lease = leases.current(self.store, self.slot)
        if lease is None or lease.epoch != epoch or not lease.live(self.clock.now) or \
                lease.instance != manager.daemon.boot_id:
            self.violation(f"{manager.name} acted without the lease (epoch {epoch}; the store: "
                           f"{lease.holder if lease else 'none'} epoch {lease.epoch if lease else 0}): {what}")

    def converged(self) -> list[str]:
        """What is wrong now with where CTs run (empty: every ADMST UP CT runs
        exactly once), and intents left pending longer than an action may take."""
        wrong = []
        cfg = persist.configured(self.store, dcstore.dc(), self.slot) if self.dc is not None else self.configured
        for ctid, ct in sorted(cfg.cts.items()):
            n = len(self.up.get(ctid, ()))
            if ct.admst == "UP" and n != 1:
                wrong.append(f"CT {ctid} runs on {n} HNs")
        for kind, ctid, hn in persist.pending_before(self.store, self.clock.now - ACTION_TIMEOUT - 5, self.slot):
            wrong.append(f"intent {kind} {ctid} on {hn} never finished nor resumed")
        return wrong

    def run_until(self, t: float) -> None:
        self.clock.run_until(t)
