"""The simulated manager: the daemon's own `Manager` (manager/daemon.py) with
simulated ports, as pve-ha-simulator runs the real CRM. Its store is a real
SQLite store (in memory, one per schedule, shared by the rack's managers),
reached over a link to the node "store" (store/link.py), so a restarted or
newly leading manager starts from exactly what the daemon keeps there
(placements, rejections, the HNs' newest reports, the journal of unfinished
intents, the lease); everything else is rebuilt.

Ports: the clock is the simulated one (with this host's skew); the transport
delivers Report objects over the simulated network (verification is the real
transport's job, freshness the shared Receiver's); SSH is a link check at both
ends of a command with latencies and timeouts; the fencer is a BMC that powers
the node off after BMC_LATENCY; the decision log goes into the rack's log.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from ..errors import StoreError
from ..executor.runner import Result
from ..executor.ssh import SshSettings
from ..manager.config import ManagerConfig
from ..manager.daemon import Manager
from ..manager.ports import FenceDone, ManagerEnv, SpecOf
from ..reconcile.state import Action
from ..store.db import Store
from ..store.link import StoreLink
from ..wire.reports import Receiver, Report
from ..wire.results import ActionResult
from . import dcstore
from .storage import SimStoragePort
from .world import Inbox

if TYPE_CHECKING:
    from .ports import ManagerRack

SSH_LATENCY = 0.05  # s each way
CONNECT_TIMEOUT = 5.0
ACTION_TIMEOUT = 30.0
FULL_PLAN_EVERY = 1.0
BMC_LATENCY = 2.0  # s a fence command takes to power a node off
REACT = 0.001  # s from a report's arrival to the step that takes it in
RESTART_AFTER = 5.0  # s systemd waits before it starts a manager that exited again


def manager_config(rack: ManagerRack, name: str) -> ManagerConfig:
    s = rack.setup
    return ManagerConfig(name=name,
        file="sim", slot=rack.slot, listen=("127.0.0.1", 0), key=b"", agent_command=("ctagent",),
        ssh=SshSettings("root", "/dev/null", "/dev/null", 22, CONNECT_TIMEOUT), action_timeout=ACTION_TIMEOUT,
        concurrency=8, settings=rack.settings, full_plan_every=FULL_PLAN_EVERY, report_interval=s.interval,
        timers=s.timers, fence_command=("sim-bmc",) if s.fence_command else (), metrics_prefix="sim.manager")


class SimManager:
    def __init__(self, rack: ManagerRack, name: str, offset: float = 0.0) -> None:
        self.rack, self.name = rack, name
        self.clock = rack.clock  # the rack's (read on every step and store call)
        self.offset = offset  # the manager host's clock minus true time
        self.config = manager_config(rack, name)
        self.life = 0
        self.alive = False
        self.issued: list[tuple[float, Action]] = []
        self.stall_next = 0.0  # s the next decision waits before it is recorded (`stall` command)
        self.stalled_until = 0.0
        self._next: float | None = None
        self.start()

    def local(self) -> float:
        return self.clock.now + self.offset

    def start(self) -> None:
        self.life += 1
        self.alive = True
        life = self.life
        self.transport = HeartbeatInbox(self)
        link = StoreLink(self.rack.store, lambda: self.alive and self.rack.reaches_store(self.name))
        storage = None if self.rack.dc is None else SimStoragePort(
            self.rack.dc, self.name, lambda: self.alive and self.life == life, lambda: self.wake(0.0))
        env = ManagerEnv(cast(Store, link), SimSsh(self, life), self.transport, clock=self.local, mono=self.local,
                         events=SimEvents(self.rack, self.name),
                         fencer=SimBmc(self, life) if self.config.fence_command else None,
                         receiver=Receiver(b"", self.rack.slot, quiet=True), storage=storage)
        self.daemon = SimDaemon(dcstore.dc(), self.config, env, holder=f"sim manager (life {life})", poll=False)
        self.daemon.owner = self
        self.daemon.leadership.own_name = True  # as `ctmanager run`, which holds its name's lock
        self._next = None
        try:
            self.daemon.start()
        except StoreError:  # `ctmanager run` exits 1 without its store; systemd starts it again
            self.rack.log(self.name, f"cannot start: the store is unreachable; starting again in {RESTART_AFTER:g}s")
            self.alive = False
            self.rack.clock.after(RESTART_AFTER, self._restart, self.life)
            return
        self.wake(0.0)

    def _restart(self, life: int) -> None:
        if life == self.life and not self.alive:  # nobody killed or started it meanwhile
            self.start()

    def kill(self) -> None:
        self.alive = False
        self.life += 1  # in-flight SSH results and timers of this life are dropped

    # ---- stepping the real loop ------------------------------------------
    def wake(self, delay: float) -> None:
        """Make sure the daemon steps within `delay` s (one timer pending at a time)."""
        if not self.alive:
            return
        when = self.clock.now + (delay if delay > 0.0 else 0.0)
        if self._next is not None and self._next <= when:
            return
        self._next = when
        self.clock.at(when, self._step, self.life, when)

    def _step(self, life: int, when: float) -> None:
        if life != self.life or when != self._next:
            return  # a step of an earlier life, or one an earlier wake-up replaced
        self._next = None
        if self.stalled_until > self.rack.clock.now:  # stuck between deciding and recording: nothing else runs
            self.wake(self.stalled_until - self.rack.clock.now)
            return
        now = self.local()
        wake = self.daemon.step(now)
        self.wake(max(wake - now, 1e-6))  # never 0: float rounding of the skewed clock could spin

    def hear(self, report: Report) -> None:
        if self.alive:
            self.transport.inbox.append(report)
            self.wake(REACT)


class SimDaemon(Manager):
    """The real daemon; only the gap between a decision and its record can be
    stretched (a GC pause, a slow store, an unfair write lock), as `stall` asks."""

    owner: SimManager

    def _after_decide(self, commit: Callable[[], None]) -> None:
        o = self.owner
        if o.stall_next <= 0:
            return commit()
        stall, o.stall_next = o.stall_next, 0.0
        o.stalled_until = o.rack.clock.now + stall
        o.rack.log(o.name, f"stalls {stall:g}s between deciding and recording")
        life = o.life

        def resume() -> None:
            if life == o.life:
                o.stalled_until = 0.0
                commit()
                o.wake(0.0)
        o.rack.clock.after(stall, resume)


class HeartbeatInbox(Inbox):
    """The manager's transport: its heartbeats go out as the voter `manager` (every
    manager of the rack is that one voter) from its own network node, and each one
    is checked against the lease (a manager that does not lead must not vote)."""

    def __init__(self, owner: SimManager) -> None:
        super().__init__(owner.name, owner.rack.broadcast)
        self.owner = owner

    def send(self, report: Any, to: Any) -> None:
        self.owner.rack.check_lease(self.owner, report.epoch, "heartbeat")
        self.broadcast(self.name, report)


class SimEvents:
    """The decision log, in the simulator's event-log format."""

    def __init__(self, rack: ManagerRack, name: str) -> None:
        self.rack, self.name = rack, name

    def news(self, line: str) -> None:
        self.rack.log(self.name, line.split(":")[0] if "DEAD" in line or "QUORUM" in line else line)

    def alarm(self, text: str) -> None:
        self.rack.alarm(text)

    def action(self, a: Action) -> None:
        self.rack.log(self.name, str(a))

    def result(self, a: Action, result: str, message: str, seconds: float) -> None:
        if result != "done":
            self.rack.log(self.name, f"{a.kind} {a.ctid} on {a.hn}: {result}: {message}")

    def fencing(self, hn: str, silent_for: float, argv0: str) -> None:
        self.rack.log(self.name, f"{hn} silent: running the fence command")

    def fenced(self, hn: str, ok: bool, detail: str) -> None:
        pass

    def note(self, line: str) -> None:
        pass

    def trouble(self, line: str) -> None:
        if "does not lead" in line:  # fenced: a write after the lease ran out (e.g. a stall) is refused, rightly
            self.rack.log(self.name, "a write refused: it no longer leads")
        elif self.rack.reaches_store(self.name):  # the store's own failure: a bug
            self.rack.violation(f"{self.name}'s store failed: {line}")
        else:
            self.rack.log(self.name, "store unreachable")

    def leadership(self, line: str) -> None:
        self.rack.log(self.name, line)

    def crash_loop(self, ctid: int, crashes: int, window: float) -> None:
        self.rack.alarm(f"CT {ctid} is in a crash loop ({crashes} crashes in {window / 60:g} min): left down")


class SimSsh:
    """`ctagent apply` over SSH: a link check at both ends, latencies, timeouts."""

    def __init__(self, owner: SimManager, life: int) -> None:
        self.owner, self.life = owner, life

    def close(self) -> None:
        pass

    def submit(self, actions: Iterable[Action], spec_of: SpecOf, done: Callable[[Any], None], epoch: int = 0) -> None:
        for a in actions:
            self.owner.rack.check_majority(self.owner.name, a)
            self.owner.rack.check_lease(self.owner, epoch, str(a))
            self.owner.issued.append((self.owner.rack.clock.now, a))
            spec = spec_of(a.ctid)
            self._ssh(a, b"" if spec is None else json.dumps(spec).encode(), done, epoch)

    def _ssh(self, a: Action, stdin: bytes, done: Callable[[Any], None], epoch: int) -> None:
        owner, r = self.owner, self.owner.rack
        agent = r.agents[a.hn]
        sent = owner.local()

        def result(kind: str, message: str) -> None:
            if self.life != owner.life:
                return
            done(Result(a, ActionResult(kind), message, owner.local() - sent))
            owner.wake(0.0)

        me = owner.name
        if not (r.net.up(me, a.hn) and r.net.up(a.hn, me)) or not agent.powered:
            r.clock.after(CONNECT_TIMEOUT, lambda: result("failed", "cannot connect"))
            return
        answered = [False]

        def reply(kind: str, message: str) -> None:
            if answered[0]:
                return
            answered[0] = True
            if r.net.up(a.hn, me):
                r.clock.after(SSH_LATENCY, lambda: result(kind, message))
            else:
                r.clock.after(ACTION_TIMEOUT, lambda: result("failed", "connection lost"))

        r.clock.after(SSH_LATENCY, lambda: agent.apply(a.kind, a.ctid, stdin, a.purge, reply, epoch))

        def timeout() -> None:
            if not answered[0]:
                answered[0] = True
                result("failed", f"no result within {ACTION_TIMEOUT:g}s")
        r.clock.after(ACTION_TIMEOUT, timeout)


class SimBmc:
    """A fence command: the BMC powers the node off (it answers on its own network)."""

    def __init__(self, owner: SimManager, life: int) -> None:
        self.owner, self.life = owner, life

    def fence(self, hn: str, ip: str, done: FenceDone) -> None:
        def off() -> None:
            agent = self.owner.rack.agents[hn]
            if agent.powered:
                agent.reset("powered off by the fence command")
                agent.boots += 1  # it stays off
            if self.life == self.owner.life:
                done(hn, 0, "off")
                self.owner.wake(0.0)
        self.owner.rack.clock.after(BMC_LATENCY, off)
