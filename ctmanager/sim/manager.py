"""A simulated manager: `ctmanager run`'s Core (manager/core.py) with a simulated
network and SSH. What the daemon keeps in the store (placements, rejections)
survives a restart here too; everything else is rebuilt, as in the daemon."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..fencing.quorum import MANAGER
from ..manager.core import Core
from ..reconcile.state import Action, Observed, Placements
from ..wire.reports import Receiver, Report
from .agent import METRICS

if TYPE_CHECKING:
    from .rack import SimRack

SSH_LATENCY = 0.05  # s each way
CONNECT_TIMEOUT = 5.0
ACTION_TIMEOUT = 30.0
FULL_PLAN_EVERY = 1.0
BMC_LATENCY = 2.0  # s a fence command takes to power a node off


class SimManager:
    def __init__(self, rack: "SimRack", offset: float = 0.0) -> None:
        self.rack = rack
        self.where: dict[int, str] = {}  # the store's placements
        self.rejected: dict[tuple[int, str], float] = {}  # and rejections
        self.reports: dict[str, tuple[Report, float]] = {}  # and each HN's newest report
        self.life = 0
        self.alive = False
        self.issued: list[tuple[float, Action]] = []
        self.offset = offset  # the manager host's clock minus true time
        self.start()

    def local(self) -> float:
        return self.rack.clock.now + self.offset

    def start(self) -> None:
        r = self.rack
        now = self.local()
        self.life += 1
        self.alive = True
        self.seq = 0
        live = {k: t for k, t in self.rejected.items() if t > now}
        last_seen = Observed()
        for report, at in self.reports.values():
            last_seen.update(report, at)
        self.core = Core(r.configured, Placements(dict(self.where), live), r.settings, r.timers, now, last_seen)
        self.receiver = Receiver(b"", r.slot, quiet=True)
        self._changed: set[int] = set()
        life = self.life
        r.clock.after(0.0, lambda: self._beat(life))
        r.clock.after(FULL_PLAN_EVERY, lambda: self._full(life))

    def kill(self) -> None:
        self.alive = False
        self.life += 1  # in-flight SSH results and timers of this life are dropped

    def _beat(self, life: int) -> None:
        if life != self.life:
            return
        now = self.local()
        self.seq += 1
        self.rack.broadcast(MANAGER, Report(self.rack.slot, MANAGER, f"{life:08x}", self.seq, now, False, METRICS,
                                            (), False, self.core.hears(now)))
        self.rack.clock.after(self.rack.interval, lambda: self._beat(life))

    def hear(self, report: Report) -> None:
        if not self.alive:
            return
        now = self.local()
        if self.receiver.accept(report, report.hn, now) is None:
            return  # duplicated or overtaken: dropped, as the daemon's Receiver does
        changed = self.core.heard(report, now)
        if report.hn in self.rack.agents:
            self.reports[report.hn] = (report, now)  # what the daemon saves in the store
        if changed:
            if not self._changed:  # the first change since the last plan: plan in 1 ms
                self.rack.clock.after(0.001, self._plan_changed, self.life)
            self._changed |= changed

    def _plan_changed(self, life: int) -> None:
        if life != self.life:
            return
        changed, self._changed = self._changed, set()
        self._decide(life, changed)

    def _full(self, life: int) -> None:
        if life != self.life:
            return
        self._decide(life, None)
        self.rack.clock.after(FULL_PLAN_EVERY, lambda: self._full(life))

    def _decide(self, life: int, only: set[int] | None) -> None:
        if life != self.life:
            return
        r = self.rack
        now = self.local()
        expired = self.core.expire(now)
        only = None if only is None else only | expired
        d = self.core.decide(now, only)
        for line in d.view.news:
            r.log(MANAGER, line.split(":")[0] if "DEAD" in line or "QUORUM" in line else line)
        for alarm in d.plan.alarms:
            r.alarm(alarm)
        self.where.update(d.plan.place)  # saved before acting, like the daemon
        if r.setup.fence_command and d.view.quorum:
            for hn in self.core.to_fence(now):
                r.log(MANAGER, f"{hn} silent: running the fence command")
                r.clock.after(BMC_LATENCY, self._fenced, life, hn)
        for a in d.actions:
            r.check_majority(a)
            self.issued.append((now, a))
            r.log(MANAGER, str(a))
            self._ssh(a, life)

    def _fenced(self, life: int, hn: str) -> None:
        """The BMC powered the node off (it answers on its own network)."""
        agent = self.rack.agents[hn]
        if agent.powered:
            agent.reset("powered off by the fence command")
            agent.boots += 1  # it stays off
        if life == self.life:
            self.core.fenced_off(hn, self.local())

    def _ssh(self, a: Action, life: int) -> None:
        r = self.rack
        agent = r.agents[a.hn]

        def result(kind: str, message: str) -> None:
            if life != self.life:
                return
            done = self.local()
            self.core.finished(a, kind, done)
            if kind == "rejected":
                self.rejected[a.ctid, a.hn] = done + r.settings.reject_memory
            if kind != "done":
                r.log(MANAGER, f"{a.kind} {a.ctid} on {a.hn}: {kind}: {message}")
            self._decide(life, {a.ctid})

        if not (r.net.up(MANAGER, a.hn) and r.net.up(a.hn, MANAGER)) or not agent.powered:
            r.clock.after(CONNECT_TIMEOUT, lambda: result("failed", "cannot connect"))
            return
        answered = [False]

        def reply(kind: str, message: str) -> None:
            if answered[0]:
                return
            answered[0] = True
            if r.net.up(a.hn, MANAGER):
                r.clock.after(SSH_LATENCY, lambda: result(kind, message))
            else:
                r.clock.after(ACTION_TIMEOUT, lambda: result("failed", "connection lost"))

        r.clock.after(SSH_LATENCY, lambda: agent.apply(a.kind, a.ctid, reply))

        def timeout() -> None:
            if not answered[0]:
                answered[0] = True
                result("failed", f"no result within {ACTION_TIMEOUT:g}s")
        r.clock.after(ACTION_TIMEOUT, timeout)
