"""The rack leader's watch over its storage nodes' backups (ctbackup on each):
every `poll_every` it reads each node's status, records each CT's newest restore
point in the store (`status` shows it against the RPO), logs an ALARM line when a
CT's newest point grows older than 2 x RPO (and a line when it is back), or when a
node's backups cannot be read or its daemon does not run or its repository fails,
and sends each CT's restore point age to carbon.

`assess` is pure (time is an argument); `BackupWatch` runs it while this
manager leads, stepped by the leader's loop (a manager.ports.Worker): when to
poll is decided in the loop, each poll's I/O (SSH, store writes fenced by the
lease) runs on the background runner, and its outcome is said at the next step.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections import deque
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
from .ports import Runner

log = logging.getLogger(__name__)
IN_FLIGHT_POLL = 0.1  # s between the loop's looks for a running poll's outcome


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


@dataclass
class Polled:
    """A poll's outcome: what `assess` found (None: it did not get that far) and,
    when it failed, why (store trouble; its log lines are said all the same)."""

    result: Assessment | None
    trouble: str = ""


class BackupWatch:
    """The daemon's backup watch (a manager.ports.Worker): every `poll_every`
    while this manager leads, one poll runs as a job on the runner (SSH to the
    storage nodes, store writes on a connection of its own, fenced by the lease
    asked at submit time); the next step says what it found."""

    def __init__(self, store_path: Locator, slot: int, make_nodes: Callable[[Store], Any], settings: BackupSettings,
                 runner: Runner, metrics: MetricsSender | None = None) -> None:
        self.store_path, self.slot, self.make_nodes, self.settings = store_path, slot, make_nodes, settings
        self.runner, self.metrics = runner, metrics
        self.lease_of: Callable[[], leases.Lease | None] | None = None  # set by the manager daemon
        self.memory = Memory()  # only jobs use it, one at a time
        self._trouble = ""
        self._next_poll = -math.inf  # (at once, when it leads)
        self._in_flight = self._leading = False
        self._outcomes: deque[Polled | Exception] = deque()  # appended by the job's thread (atomic)
        # The jobs' store connection and SSH sessions, kept between polls; used by one job at a time.
        self._conn_lock = threading.Lock()
        self._store: Store | None = None
        self._nodes: Any = None
        self._running = self._closed = False

    def due(self, now: float) -> float:
        if self._in_flight:
            return now + IN_FLIGHT_POLL
        return max(now, self._next_poll) if self._leading else math.inf

    def step(self, now: float, leading: bool) -> None:
        while self._outcomes:
            self._take(self._outcomes.popleft(), now)
        lease = self.lease_of() if self.lease_of is not None and leading else None
        self._leading = leading and (self.lease_of is None or lease is not None)
        if not self._leading or self._in_flight or now < self._next_poll:
            return
        self._next_poll, self._in_flight = now + self.settings.poll_every, True
        self.runner.submit(functools.partial(self._job, lease), self._outcomes.append, name="backups")

    def close(self) -> None:
        with self._conn_lock:  # a job running now closes them when it ends
            self._closed = True
            if not self._running:
                self._drop()

    def _take(self, outcome: Polled | Exception, now: float) -> None:
        """A finished poll, in the loop: its log lines, metrics, and store trouble said once."""
        self._in_flight = False
        if isinstance(outcome, Exception):  # (the job catches its own; a runner's word for anything else)
            outcome = Polled(None, f"unexpected {type(outcome).__name__}: {outcome}")
        if outcome.result is not None:
            for line in outcome.result.lines:
                (log.warning if line.startswith("ALARM") else log.info)(line)
        if outcome.trouble:
            if outcome.trouble != self._trouble:
                log.warning("backups: %s; retrying", outcome.trouble)
            self._trouble = outcome.trouble
            return
        self._trouble = ""
        if outcome.result is not None and self.metrics is not None:
            self.metrics.send_many(outcome.result.metrics)

    def _job(self, lease: leases.Lease | None) -> Polled:
        """On the runner's thread: one poll, fenced by `lease`. On store trouble the
        connection is dropped (the next poll opens a new one)."""
        result: Assessment | None = None
        try:
            with self._conn_lock:
                self._running = True
                if self._closed:
                    return Polled(None)
                if self._store is None:
                    self._store = open_store(self.store_path)
                    self._nodes = self.make_nodes(self._store)
                store, nodes = self._store, self._nodes
            if lease is not None:
                store.fence = lambda s, held=lease: leases.check(s, held)
            now = store.now()
            result = self.assess(store, nodes, now)
            self.record(store, result, now)
            return Polled(result)
        except Exception as exc:  # noqa: BLE001 - CtmError: the store; anything else must not stop the watch
            with self._conn_lock:
                self._drop()
            why = str(exc) if isinstance(exc, CtmError) else f"unexpected {type(exc).__name__}: {exc}"
            return Polled(result, why)
        finally:
            with self._conn_lock:
                self._running = False
                if self._closed:
                    self._drop()

    def _drop(self) -> None:
        nodes, store, self._nodes, self._store = self._nodes, self._store, None, None
        if nodes is not None:
            nodes.close()
        if store is not None:
            store.close()

    def assess(self, store: Store, nodes: Any, now: float) -> Assessment:
        """Read every storage node of the rack (a node that cannot be read is a reading too)."""
        storage = [n for n in queries.nodes(store, rack=self.slot) if n.role == "storage"]
        names = {c.ctid: c.hostname for c in queries.cts(store, rack=self.slot)}
        readings = []
        for n in storage:
            try:
                readings.append(Reading(n.hostname, nodes.status(n.hostname)))
            except (CtmError, OSError) as exc:  # the node says why, or SSH does
                readings.append(Reading(n.hostname, None, str(exc)))
        return assess(readings, names, self.memory, now)

    def record(self, store: Store, result: Assessment, now: float) -> None:
        """Each CT's newest restore point, for `status` (`now`: the store's clock)."""
        with store.transaction(config=False):
            for node, (rpo, points) in result.points.items():
                known.record(store, node, rpo, points, now)
