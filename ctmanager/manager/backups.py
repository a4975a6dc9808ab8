"""The rack leader's watch over its storage nodes' backups (ctbackup on each):
every `poll_every` it reads each node's status, records each CT's newest restore
point in the store (`status` shows it against the RPO), logs an ALARM line when a
CT's newest point grows older than 2 x RPO (and a line when it is back), or when a
node's backups cannot be read or its daemon does not run or its repository fails,
and sends each CT's restore point age to carbon.

`assess` is pure (time is an argument); `BackupWatch` is the daemon's thread that
runs it while this manager leads, its store writes fenced by the lease.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import CtmError
from ..monitoring.metrics import MetricsSender
from ..store import Store, open_store, queries
from ..store import backups as known
from ..store import lease as leases
from ..store.db import Locator
from .config import BackupSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reading:
    """One storage node's `ctbackup status` (None: it could not be read, `error` says why)."""

    node: str
    status: Mapping[str, Any] | None
    error: str = ""


@dataclass
class Memory:
    """What the watch remembers between polls: what it has already alarmed about."""

    alarmed: set[int] = field(default_factory=set)         # CTs past 2 x RPO (or never backed up for that long)
    never_since: dict[int, float] = field(default_factory=dict)
    troubled: dict[str, str] = field(default_factory=dict)  # storage node -> its trouble, as said


@dataclass(frozen=True)
class Assessment:
    points: dict[str, tuple[float, list[tuple[int, str | None, float | None]]]]  # node -> (RPO, its CTs' newest)
    lines: list[str]        # for the log, in order; an alarm starts with "ALARM"
    metrics: dict[str, float]


def _node_trouble(r: Reading) -> str:
    if r.status is None:
        return f"cannot read its backups: {r.error}"
    if not r.status.get("daemon"):
        return "its backup daemon (ctbackup run) is not running"
    if r.status.get("error"):
        return f"its repository fails: {r.status['error']}"
    return ""


def assess(readings: list[Reading], names: Mapping[int, str], memory: Memory, now: float) -> Assessment:
    """`names`: CTID -> hostname of the rack's CTs (other CTs on a node are another rack's)."""
    points: dict[str, tuple[float, list[tuple[int, str | None, float | None]]]] = {}
    lines: list[str] = []
    metrics: dict[str, float] = {}
    for r in readings:
        trouble = _node_trouble(r)
        if trouble != memory.troubled.get(r.node, ""):
            lines.append(f"ALARM backups on {r.node}: {trouble}" if trouble else f"backups on {r.node}: fine again")
        memory.troubled[r.node] = trouble
        if r.status is None:
            continue
        rpo = float(r.status.get("rpo", 60))
        mine = [c for c in r.status.get("cts", []) if int(c["ctid"]) in names]
        points[r.node] = (rpo, [(int(c["ctid"]), c.get("newest"), c.get("at")) for c in mine])
        metrics[f"backup.{r.node}.repository_bytes"] = float(r.status.get("repository_bytes", 0))
        for c in mine:
            ctid, at = int(c["ctid"]), c.get("at")
            name = f"CT {ctid} {names[ctid]} on {r.node}"
            if at is None:
                since = memory.never_since.setdefault(ctid, now)
                late, why = now - since > 2 * rpo, f"no restore point yet after {now - since:.0f} s"
            else:
                memory.never_since.pop(ctid, None)
                age = max(0.0, now - float(at))
                metrics[f"backup.{names[ctid]}.age"] = round(age, 1)
                late, why = age > 2 * rpo, f"newest restore point {age:.0f} s old"
            if late and ctid not in memory.alarmed:
                lines.append(f"ALARM backup of {name}: {why} (RPO {rpo:g} s)")
                memory.alarmed.add(ctid)
            elif not late and ctid in memory.alarmed:
                lines.append(f"backup of {name}: within its RPO again ({why})")
                memory.alarmed.discard(ctid)
    return Assessment(points, lines, metrics)


class BackupWatch(threading.Thread):
    """The daemon's thread: polls the rack's storage nodes while `lease_of()` says it leads."""

    def __init__(self, store_path: Locator, slot: int, make_nodes: Callable[[Store], Any], settings: BackupSettings,
                 metrics: MetricsSender | None = None) -> None:
        super().__init__(name="backups", daemon=True)
        self.store_path, self.slot, self.make_nodes, self.settings = store_path, slot, make_nodes, settings
        self.metrics = metrics
        self.stopping, self.wake = threading.Event(), threading.Event()
        self.lease_of: Callable[[], leases.Lease | None] = lambda: None
        self.memory = Memory()
        self._trouble = ""

    def run(self) -> None:
        store: Store | None = None
        nodes: Any = None
        while not self.stopping.is_set():
            lease = self.lease_of()
            try:
                if lease is not None:
                    if store is None:
                        store = open_store(self.store_path)
                        nodes = self.make_nodes(store)
                    store.fence = lambda s, held=lease: leases.check(s, held)
                    self.poll(store, nodes)
                    self._trouble = ""
            except CtmError as exc:  # the store: said once, tried again
                if str(exc) != self._trouble:
                    self._trouble = str(exc)
                    log.warning("backups: %s; retrying", exc)
                if store is not None:
                    store.close()
                store = nodes = None
            self.wake.wait(self.settings.poll_every)
            self.wake.clear()
        if nodes is not None:
            nodes.close()
        if store is not None:
            store.close()

    def poll(self, store: Store, nodes: Any) -> Assessment:
        storage = [n for n in queries.nodes(store, rack=self.slot) if n.role == "storage"]
        names = {c.ctid: c.hostname for c in queries.cts(store, rack=self.slot)}
        readings = []
        for n in storage:
            try:
                readings.append(Reading(n.hostname, nodes.status(n.hostname)))
            except (CtmError, OSError) as exc:  # the node says why, or SSH does
                readings.append(Reading(n.hostname, None, str(exc)))
        now = store.now()
        result = assess(readings, names, self.memory, now)
        with store.transaction(config=False):
            for node, (rpo, points) in result.points.items():
                known.record(store, node, rpo, points, now)
        for line in result.lines:
            (log.warning if line.startswith("ALARM") else log.info)(line)
        if self.metrics is not None:
            self.metrics.send_many(result.metrics)
        return result
