"""A simulated DC of two racks (101, 102) on one store: each rack its HNs,
its manager pair and a storage node; tenants t1, t2 ... live in rack-101 and
move. Ops commands go through the real edits (operations/: moves.py, the
Inventory), faults through sim/commands.py, and every manager is the real
daemon, tenant moves included (manager/workflows.py).

Invariants, besides each rack's (sim/rack.py): a CT never runs on two HNs of
the DC at once (so never in two racks); sim/storage.py's for /data (no start on
stale or sealed /data, no write after the final copy); and at the end, every move
ended (online at the destination, or rolled back) with each ADMST UP CT running
on exactly one HN of the rack it is configured in.

Ops commands (besides the fault commands of sim/commands.py):
    tenant move T --to SLOT [--no-precopy]
    tenant abort T
    ct set HOSTNAME --admst up|down
    ct move HOSTNAME HN | ct reset HOSTNAME
    hn drain HN | hn undrain HN
    stall MANAGER SECONDS      its next decision waits this long before it is recorded
    storage NODE off|on        (network) the storage node cut from everyone / back
"""

from __future__ import annotations

import random
from dataclasses import replace

from ..errors import CtmError
from ..operations import moves as moveops
from ..operations.inventory import Inventory
from ..store import moves, queries
from . import dcstore
from .commands import SimError
from .commands import apply as apply_fault
from .rack import Setup, SimRack
from .storage import SimData
from .world import STORE, Clock, Network, Weather

SLOTS = (101, 102)


class SimDc:
    def __init__(self, setup: Setup, tenants: int = 1) -> None:
        self.setup = setup
        self.clock = Clock()
        self.rng = random.Random(setup.seed)
        self.net = Network(self.clock, self.rng, Weather(**setup.weather.__dict__))
        self.store = dcstore.dc_store(setup.hns, setup.cts, tenants, lambda: self.clock.now)
        self.lines: list[str] = []
        self.violations: list[str] = []
        self.up: dict[int, set[str]] = {}
        self.data = SimData(self)
        for ct in queries.cts(self.store):
            self.data.version[ct.storage, ct.ctid] = 0
        self.racks = {slot: SimRack(replace(setup, seed=setup.seed + slot), self, slot) for slot in SLOTS}
        storage = {n.hostname for n in queries.nodes(self.store) if n.role == "storage"}
        self.nodes = frozenset().union(*(r.nodes for r in self.racks.values())) | storage

    # ---- shared log and truth ------------------------------------------------------
    def log(self, who: str, what: str) -> None:
        self.lines.append(f"{self.clock.now:8.2f} {who:<9} {what}")

    def violation(self, what: str) -> None:
        self.violations.append(f"{self.clock.now:.2f}: {what}")
        self.log("INVARIANT", what)

    def run_until(self, t: float) -> None:
        self.clock.run_until(t)

    # ---- commands -----------------------------------------------------------------------
    def rack_of(self, node: str) -> SimRack:
        for rack in self.racks.values():
            if node in rack.nodes and node != STORE:
                return rack
        raise SimError(f"no node {node!r} (nodes: {', '.join(sorted(self.nodes))})")

    def apply(self, cmd: str) -> None:
        words = cmd.split()
        inv = Inventory(self.store, dcstore.dc(), now=lambda: self.clock.now)
        match words:
            case ["tenant", "move", tenant, "--to", slot, *rest] if set(rest) <= {"--no-precopy"}:
                self.log("ops", cmd)
                self._edit(lambda: moveops.begin(self.store, dcstore.dc(), tenant, int(slot), self.clock.now,
                                                 precopy="--no-precopy" not in rest))
            case ["tenant", "abort", tenant]:
                self.log("ops", cmd)
                m = moves.open_of(self.store, tenant)
                if m is not None:
                    self._edit(lambda: moves.ask_abort(self.store, m, self.clock.now,
                                                       runner_alive=self.racks[m.dst].leader() is not None))
            case ["ct", "set", name, "--admst", ("up" | "down") as state]:
                self.log("ops", cmd)
                self._edit(lambda: inv.set_ct(name, admst=state.upper()))
            case ["ct", "move", name, hn]:
                self.log("ops", cmd)
                self._edit(lambda: inv.move_ct(name, hn))
            case ["ct", "reset", name]:
                self.log("ops", cmd)
                self._edit(lambda: inv.reset_ct(name))
            case ["hn", "drain" | "undrain" as what, hn]:
                self.log("ops", cmd)
                self._edit(lambda: inv.set_drained(hn, what == "drain"))
            case ["stall", name, seconds]:
                rack = self.rack_of(name)
                if name not in rack.managers:
                    raise SimError(f"{cmd!r}: {name} is not a manager")
                self.log("cmd", cmd)
                rack.managers[name].stall_next = float(seconds)
            case ["storage", node, "off" | "on" as state]:
                self.log("cmd", cmd)
                if state == "off":
                    self.net.isolate(node, set(self.nodes))
                else:
                    self.net.heal(node)
            case ["heal"] | ["weather", *_] | ["store", *_]:
                for i, rack in enumerate(self.racks.values()):
                    apply_fault(rack, cmd, quiet=i > 0)
            case ["partition", *_]:  # within the rack of the first node named (the other rack is not in it)
                named = [n.strip() for w in words[1:] for n in w.split(",") if n.strip() not in ("", "|", STORE)]
                if not named:
                    raise SimError(f"{cmd!r}: name a node")
                rack = self.rack_of(named[0])
                apply_fault(rack, cmd, everyone=set(rack.nodes))
            case _:
                target = next((w for w in words[1:] if w in self.nodes and w != STORE), None)
                if target is None and STORE in words:  # `network store off`: one store for every rack
                    target = next(iter(self.racks[SLOTS[0]].managers))
                if target is None:
                    raise SimError(f"unknown command {cmd!r}")
                apply_fault(self.rack_of(target), cmd, everyone=set(self.nodes))

    def _edit(self, fn: object) -> None:
        """An ops edit, as the CLI makes it: refused edits are logged, not raised."""
        try:
            with self.store.transaction():
                fn()  # type: ignore[operator]
        except CtmError as exc:
            self.log("ops", f"refused: {exc}")

    # ---- the end ------------------------------------------------------------------------
    def converged(self) -> list[str]:
        wrong = [w for rack in self.racks.values() for w in rack.converged()]
        for m in moves.listing(self.store, open_only=True):
            wrong.append(f"move {m.id} of {m.tenant} still open ({m.phase} {m.step})")
        return wrong


def run(dc: SimDc, schedule: list[tuple[float, str]], end: float) -> None:
    for t, cmd in sorted(schedule, key=lambda x: x[0]):
        dc.run_until(t)
        dc.apply(cmd)
    dc.run_until(end)
