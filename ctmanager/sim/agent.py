"""A simulated HN: its runtime (which CTs run), its watchdog, and its agent,
which decides with the daemon's own code: Membership and FenceGuard
(ctmanager/fencing) and the start admission rule (`fence_verdict`).

Faults: the agent can be killed or hung (no reports, no pets: the watchdog
resets the node `watchdog_timeout` after the last pet), the runtime can hang
(stops never finish), and a reset node boots again after `reboot_after`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..agent.apply import fence_verdict
from ..fencing.guard import FenceGuard
from ..fencing.quorum import MANAGER, Membership
from ..fencing.timers import FenceTimers
from ..wire.reports import CtState, Metrics, Receiver, Report

if TYPE_CHECKING:
    from .rack import SimRack

METRICS = Metrics(0.1, 64 << 30, 60 << 30, 1 << 40, 900 << 30, 0)
STOP_TIME = 0.3  # s a CT takes to stop
START_TIME = 0.5  # s a CT takes to start


class SimAgent:
    def __init__(self, rack: SimRack, hn: str, voters: frozenset[str], timers: FenceTimers,
                 interval: float, reboot_after: float | None, offset: float = 0.0) -> None:
        self.rack, self.hn, self.voters, self.timers = rack, hn, voters, timers
        self.interval, self.reboot_after = interval, reboot_after
        self.running: dict[int, float] = {}  # CTID -> since (the runtime's truth: UP)
        self.configs: set[int] = set()  # CTs with a config here (DOWN unless running)
        self.alive = False  # the agent process runs and is not hung
        self.hung_runtime = False
        self.powered = True
        self.boots = 0
        self.last_pet = 0.0
        self.fence_written: tuple[bool, float] | None = None  # what `ctagent apply` reads
        self.offset = offset  # this node's clock minus true time (NTP keeps it small, not zero)
        self.boot()

    def local(self) -> float:
        return self.rack.clock.now + self.offset

    # ---- life cycle ------------------------------------------------------
    def boot(self) -> None:
        now = self.local()
        self.boots += 1
        self.alive, self.powered = True, True
        self.seq = 0
        self.boot_id = f"{self.boots:08x}"
        self.membership = Membership(self.hn, self.voters | {MANAGER}, self.timers.fence_after, now)
        self.guard = FenceGuard(self.membership, started=now, lookahead=self.interval)
        self.receiver = Receiver(b"", self.rack.slot, quiet=True)
        self.pet()
        self._tick_scheduled(self.boots)

    def pet(self) -> None:
        """The watchdog (hardware: true time) resets the node if this was the last pet
        `watchdog_timeout` later."""
        now = self.rack.clock.now
        self.last_pet = now
        boots = self.boots

        def check() -> None:
            if self.last_pet == now and self.boots == boots and self.powered:
                self.reset(f"watchdog: not petted for {self.timers.watchdog_timeout:g}s")
        self.rack.clock.at(now + self.timers.watchdog_timeout, check)

    def kill(self) -> None:
        self.alive = False  # like kill -9 (or a hang): the watchdog is not petted any more

    def start_agent(self) -> None:
        if self.powered and not self.alive:
            self.boot()

    def _tick_scheduled(self, boot: int) -> None:
        self.rack.clock.after(self.interval, lambda: self.tick(boot))

    # ---- the agent's round -----------------------------------------------
    def tick(self, boot: int) -> None:
        if boot != self.boots or not self.powered:
            return  # a round of an earlier life
        now = self.local()
        self._tick_scheduled(boot)
        if not self.alive:
            return
        step = self.guard.step(now, set(self.running))
        if step.news:
            self.rack.log(self.hn, step.news.split(":")[0] if step.fenced else "quorum regained")
        for ctid in step.stop:
            self.stop_ct(ctid, "fenced")
        if step.pet:
            self.pet()
        self.fence_written = (step.fenced, now)
        self.seq += 1
        report = Report(self.rack.slot, self.hn, self.boot_id, self.seq, now, False, METRICS,
                        tuple(CtState(c, "UP" if c in self.running else "DOWN", self.running.get(c, 0.0))
                              for c in sorted(self.configs | set(self.running))),
                        step.fenced, self.membership.hears(now))
        self.rack.broadcast(self.hn, report)

    def hear(self, report: Report) -> None:
        now = self.local()
        if self.alive and self.powered and self.receiver.accept(report, report.hn, now):
            self.membership.hear(report.hn, report.sent_at, now, report.hears)

    def reset(self, why: str) -> None:
        """Node reset: every CT dies at once, the agent with them."""
        self.rack.log(self.hn, f"RESET ({why}); {len(self.running)} CT(s) killed")
        for ctid in sorted(self.running):
            self.rack.ct_down(self.hn, ctid)
        self.running.clear()
        self.alive = self.powered = False
        self.boots += 1  # the old life's rounds end
        if self.reboot_after is not None:
            boots = self.boots
            self.rack.clock.after(self.reboot_after, lambda: self._power_on(boots))

    def _power_on(self, boots: int) -> None:
        if self.boots == boots and not self.powered:
            self.rack.log(self.hn, "booted")
            self.boot()

    # ---- the runtime -----------------------------------------------------
    def stop_ct(self, ctid: int, why: str) -> None:
        if self.hung_runtime or ctid not in self.running:
            return
        boots = self.boots

        def done() -> None:
            if self.boots == boots and ctid in self.running:
                del self.running[ctid]
                self.rack.ct_down(self.hn, ctid)
                self.rack.log(self.hn, f"CT {ctid} stopped ({why})")
        self.rack.clock.after(STOP_TIME, done)

    # ---- `ctagent apply`, run by sshd (works while the daemon is hung) ----
    def apply(self, kind: str, ctid: int, reply: Callable[[str, str], None]) -> None:
        if not self.powered:
            return reply("failed", "no route to host")
        now = self.local()
        if kind == "start":
            if ctid in self.running:
                return reply("done", "already running")
            fenced, at = self.fence_written if self.fence_written else (None, None)
            why = fence_verdict(self.hn, fenced, at, now, self.timers.fence_after)
            if why:
                return reply("rejected", why)
            if self.hung_runtime:
                return  # the command hangs: the manager's action timeout answers
            self.configs.add(ctid)
            boots = self.boots

            def started() -> None:
                if self.boots == boots and self.powered:
                    self.running[ctid] = self.local()
                    self.rack.ct_up(self.hn, ctid)
                    reply("done", f"started CT {ctid}")
                else:
                    reply("failed", "the node went down")
            self.rack.clock.after(START_TIME, started)
        elif kind == "stop":
            if ctid not in self.running:
                return reply("done", "not running")
            if self.hung_runtime:
                return
            self.stop_ct(ctid, "stop")
            self.rack.clock.after(STOP_TIME + 0.01, lambda: reply("done", f"stopped CT {ctid}"))
        elif kind == "destroy":
            if ctid in self.running:
                self.stop_ct(ctid, "destroy")
            self.configs.discard(ctid)
            reply("done", f"destroyed CT {ctid}")
