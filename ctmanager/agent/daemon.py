"""`ctagent run`: observe the runtime, send signed state reports, fence.

`Agent` is the whole daemon; its surroundings are ports: the clock, the
transport (signed UDP, wire/udp.py), the runtime driver, the watchdog, the
node's shared state (agent/node.py: specs, fence file, drain flag, locks), the
load average, metrics and the decision log. `ctagent run` plugs in the real
ones; the simulator (ctmanager/sim) runs this same class with simulated ones.

A full snapshot goes out every `report_interval` and at once when a CT changes
state. Changes are noticed from the runtime's event stream when it has one
(`lxc-monitor`): a line there only wakes the loop, which then observes the whole
HN again (level-based; a lost or garbled event costs nothing but latency).
Without an event stream the loop polls every POLL seconds.

Reports go to the manager and to every peer agent; the agent hears theirs and
the manager's heartbeats on `listen`. Each round the fence guard
(ctmanager/fencing/guard.py) says whether this HN still has quorum: if not,
every CT is stopped and no new one admitted; the watchdog is petted only while
that is safe, so a hung agent or a stop that fails resets the node.

Under systemd the loop also tells the service manager it lives (sdnotify: READY
after the first report went out, WATCHDOG at each turn). That watchdog only
restarts a hung agent process; the node's watchdog above is the fence. They are
kept apart by their timers: systemd's WatchdogSec (agents/ctagent.service) is
more than twice watchdog_timeout + report_interval, so a hung agent's node is
reset before systemd would restart it, and a restarted agent (which pets at once,
during its first fence_after) never rescues a node that should have fenced.
`check_watchdogs` says so at start when the two are set otherwise.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..fencing.guard import FenceGuard, FenceStep
from ..fencing.quorum import MANAGER, Membership
from ..fencing.watchdog import Watchdog
from ..monitoring.metrics import MetricsSender, cgroup_stats
from ..sdnotify import Notifier
from ..wire import reports
from ..wire.udp import UdpTransport
from .apply import committed
from .config import AgentConfig
from .drivers import Driver, DriverError
from .node import DiskNode, Node

log = logging.getLogger(__name__)
POLL = 0.25  # s between observations when the runtime has no event stream
CGROUP_ROOT = Path("/sys/fs/cgroup")


class Transport(Protocol):
    def receive(self, receiver: reports.Receiver, now: float) -> list[reports.Report]: ...
    def send(self, report: reports.Report, to: Sequence[tuple[str, int]]) -> None: ...


class Dog(Protocol):
    def pet(self) -> bool: ...
    def disarm(self) -> None: ...
    def release(self) -> None: ...


class AgentEvents(Protocol):
    def fence_news(self, text: str, fenced: bool) -> None: ...
    def fence_stop(self, ctid: int, error: str) -> None: ...
    def state_changed(self, diff: str) -> None: ...
    def cannot_observe(self, error: str) -> None: ...


class LogEvents:
    def fence_news(self, text: str, fenced: bool) -> None:
        (log.error if fenced else log.warning)("%s", text)

    def fence_stop(self, ctid: int, error: str) -> None:
        if error:
            log.error("fenced: cannot stop CT %d: %s; the watchdog is not petted", ctid, error)
        else:
            log.warning("fenced: stopped CT %d", ctid)

    def state_changed(self, diff: str) -> None:
        log.info("state changed: %s", diff)

    def cannot_observe(self, error: str) -> None:
        log.warning("cannot observe the runtime: %s; no report sent (the manager will see this HN go stale)", error)


class NoTransport:
    """For `ctagent observe`: a report body is printed, nothing is sent or heard."""

    def receive(self, receiver: reports.Receiver, now: float) -> list[reports.Report]:
        return []

    def send(self, report: reports.Report, to: Sequence[tuple[str, int]]) -> None:
        pass


def load_per_cpu() -> float:
    return os.getloadavg()[0] / (os.cpu_count() or 1)


class Agent:
    def __init__(self, config: AgentConfig, driver: Driver, clock: Callable[[], float] = time.time, *,
                 transport: Transport | None = None, watchdog: Dog | None = None, node: Node | None = None,
                 events: AgentEvents | None = None, metrics: MetricsSender | None = None,
                 receiver: reports.Receiver | None = None, load: Callable[[], float] = load_per_cpu,
                 boot_id: str | None = None, notifier: Notifier | None = None) -> None:
        self.config = config
        self.driver = driver
        self.clock = clock
        self.boot_id = boot_id or str(uuid.uuid4())  # per agent start: seq restarts, the manager sees a new boot
        self.seq = 0
        self.since: dict[int, tuple[str, float]] = {}  # CTID -> (OPST, since when)
        self._part: tuple[Any, ...] | None = None  # the report's CT part, reused while nothing in it changed
        self.node: Node = DiskNode(config) if node is None else node
        self.transport: Transport = UdpTransport(config.listen, config.key) if transport is None else transport
        self.receiver = receiver or reports.Receiver(config.key, config.rack)
        self.watchdog: Dog = Watchdog(config.watchdog, config.timers.watchdog_timeout) if watchdog is None else watchdog
        self.events: AgentEvents = events or LogEvents()
        self.metrics = metrics or MetricsSender(config.graphite, config.metrics_prefix)
        self.load = load
        self.notifier = notifier or Notifier()  # systemd's (a no-op outside it)
        now = clock()
        self.membership = Membership(config.hn, config.voters | {config.hn, MANAGER}, config.timers.fence_after, now)
        self.guard = FenceGuard(self.membership, started=now, lookahead=config.report_interval)
        self.stopping = threading.Event()
        self.last: dict[int, str] | None = None  # the states of the last report
        self.epoch = 0
        self.epoch = self._see_epoch(0)  # the newest manager epoch this HN has seen
        self.last_sent = -1e18
        self.polling = True  # no event stream: observe every POLL s
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)

    # ---- one round -----------------------------------------------------------
    def step(self, now: float) -> float:
        """Hear, observe, fence, report. Returns when the next round is due at the latest."""
        self.listen(now)
        try:
            states: dict[int, str] | None = self.driver.observe()
        except DriverError as exc:
            self.events.cannot_observe(str(exc))
            states = None
        interval = self.config.report_interval
        due = now - self.last_sent >= interval
        if due:  # an action of a newer leader may have come first: its heartbeats count from then on
            self.epoch = max(self.epoch, self._see_epoch(0))
        if due or (self.guard.fenced and states and "UP" in states.values()):
            if self.fence(now, states).stop:
                states = self._observe_or(states)
        if states is not None and (states != self.last or due):
            if self.last is not None and states != self.last:
                self.events.state_changed(_diff(self.last, states))
            report = self.report(states, now)
            self.transport.send(report, self.config.report_to)
            if due:
                self.send_metrics(report, now)
            self.last, self.last_sent = states, now
        wake = self.last_sent + interval
        return min(wake, now + POLL) if self.polling else wake

    def listen(self, now: float) -> None:
        """Take in the peers' reports and the manager's heartbeats (verified, fresh).
        A heartbeat of an older epoch than one heard before is a deposed leader's:
        it is no vote. A newer epoch is recorded on the node at once, so `ctagent
        apply` refuses the deposed leader's actions from then on."""
        for report in self.transport.receive(self.receiver, now):
            if report.hn == MANAGER:
                if report.epoch > self.epoch:
                    self.epoch = max(report.epoch, self._see_epoch(report.epoch))
                if report.epoch < self.epoch:
                    continue
            self.membership.hear(report.hn, report.sent_at, now, report.hears)

    def settled(self) -> int:
        """The newest manager epoch this HN has seen such that no action of an older
        one still runs here: a manager that took over waits for it before it acts
        on what its predecessor left in flight (manager/core.py). Sent in reports."""
        try:
            oldest = self.node.oldest_applying()
        except OSError as exc:
            log.warning("cannot read the running actions in %s: %s", self.config.state_dir, exc)
            return 0
        return self.epoch if oldest is None or oldest >= self.epoch else oldest

    def _see_epoch(self, epoch: int) -> int:
        """The node's newest epoch, after recording `epoch` (an `apply` may have seen
        a newer one). A state_dir that cannot be written costs the record, not the agent."""
        try:
            return self.node.see_epoch(epoch)
        except OSError as exc:
            log.warning("cannot record manager epoch %d in %s: %s", epoch, self.config.state_dir, exc)
            return self.epoch

    def report(self, states: dict[int, str], now: float) -> reports.Report:
        since, moved = self.since, False
        for ctid, opst in states.items():
            was = since.get(ctid)
            if was is None or was[0] != opst:
                since[ctid] = (opst, now)
                moved = True
        if len(since) != len(states):
            for ctid in since.keys() - states.keys():
                del since[ctid]
            moved = True
        book = self.node.specs
        specs_here, hashes = book.all(), book.hashes()  # the same objects while no spec changed
        part = self._part
        if moved or part is None or part[0] is not specs_here or part[1] is not hashes:
            # The CT list, and what the running CTs are promised, change only with a
            # state or a spec: a steady HN reuses them (states are `since`'s keys).
            mem_used, disk_used = committed(book, states)
            cts = tuple(reports.CtState(c, o, t, hashes.get(c, "")) for c, (o, t) in sorted(since.items()))
            part = self._part = (specs_here, hashes, cts, mem_used, disk_used,
                                 sum(1 for s in states.values() if s == "UP"))
        _, _, cts, mem_used, disk_used, up = part
        cfg = self.config
        self.seq += 1
        return reports.Report(
            cfg.rack, cfg.hn, self.boot_id, self.seq, now, self.node.drained(), reports.Metrics(
                round(self.load(), 3), cfg.memory, max(cfg.memory - mem_used, 0), cfg.disk,
                max(cfg.disk - disk_used, 0), up),
            cts, self.guard.fenced, self.membership.hears(now), self.settled())

    def send_metrics(self, report: reports.Report, now: float) -> None:
        """The HN's figures and each running CT's cgroup CPU and memory (queued; never blocks)."""
        if self.metrics.sender is None:
            return
        m = report.metrics
        self.metrics.send_many({"mem_free": m.mem_free, "disk_free": m.disk_free, "cts_up": m.ct_count,
                                "load": m.cpu_load, "fenced": int(report.fenced),
                                "voters_in_contact": len(self.membership.connected(now)) + 1}, now)
        up = [c.ctid for c in report.cts if c.opst == "UP"]
        for ctid, stats in cgroup_stats(CGROUP_ROOT, up).items():
            self.metrics.send_many({f"ct.{ctid}.{k}": v for k, v in stats.items()}, now)

    def fence(self, now: float, states: dict[int, str] | None) -> FenceStep:
        """One round of the fence: stop what must stop, pet the watchdog if safe,
        and tell `ctagent apply` (a separate process) whether it may start CTs."""
        running = {c for c, o in (states or {}).items() if o == "UP"}
        step = self.guard.step(now, running)
        if step.news:
            self.events.fence_news(step.news, step.fenced)
        for ctid in step.stop:
            try:
                with self.node.lock(ctid):
                    self.driver.stop(ctid)
                self.events.fence_stop(ctid, "")
            except DriverError as exc:
                self.events.fence_stop(ctid, str(exc))
        if states is None:
            pass  # the runtime cannot be observed: nobody knows what runs, so no pet
        elif step.pet or (step.stop and not self._still_running(step.stop)):
            self.watchdog.pet()
        self.node.write_fence(step.fenced, now)
        return step

    def _still_running(self, ctids: tuple[int, ...]) -> bool:
        try:
            states = self.driver.observe()
        except DriverError:
            return True
        return any(states.get(c) == "UP" for c in ctids)

    def _observe_or(self, states: dict[int, str] | None) -> dict[int, str] | None:
        try:
            return self.driver.observe()
        except DriverError:
            return states

    # ---- the real process ------------------------------------------------------
    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except OSError:
            pass  # the pipe is full: a wake-up is pending anyway

    def run(self) -> None:
        assert isinstance(self.transport, UdpTransport), "run() is the real daemon: the simulator steps the loop"
        watcher = self._watch()
        self.polling = watcher is None
        log.info("ctagent %s (rack %d, %s runtime) reporting to %s every %gs; %d voters, fence_after %gs, watchdog %s",
                 self.config.hn, self.config.rack, self.driver.name,
                 ", ".join(f"{h}:{p}" for h, p in self.config.report_to), self.config.report_interval,
                 len(self.membership.voters), self.config.timers.fence_after, self.config.watchdog)
        problem = check_watchdogs(self.notifier.watchdog, self.config.timers.watchdog_timeout,
                                  self.config.report_interval)
        if problem:
            log.error("%s", problem)
        while not self.stopping.is_set():
            wake = self.step(self.clock())
            self.notifier.ready(f"{self.config.hn}: reporting to {len(self.config.report_to)} voter(s)")
            self.notifier.alive()  # from the loop: a hung step stops these (and the node watchdog's pets)
            if self.transport.wait_any(max(wake - self.clock(), 0.01), [self._wake_r]):
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
        self.notifier.stopping()
        if watcher is not None and watcher.poll() is None:
            watcher.terminate()
        self._shutdown()

    def _shutdown(self) -> None:
        try:
            running = [c for c, o in self.driver.observe().items() if o == "UP"]
        except DriverError:
            running = [-1]
        if running:
            log.warning("stopping with %d CT(s) running: the watchdog stays armed and resets this node in %gs "
                        "unless ctagent runs again (drain the HN first to stop cleanly)",
                        len(running), self.config.timers.watchdog_timeout)
            self.watchdog.release()
        else:
            self.watchdog.disarm()

    def _watch(self) -> subprocess.Popen[bytes] | None:
        argv = self.driver.watch_argv()
        if argv is None:
            return None
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        except OSError as exc:
            log.warning("cannot run %s (%s); polling every %gs instead", argv[0], exc.strerror, POLL)
            return None

        def pump() -> None:
            assert proc.stdout is not None
            for _ in iter(proc.stdout.readline, b""):
                self.wake()
            log.warning("%s ended; observing every %gs", argv[0], self.config.report_interval)

        threading.Thread(target=pump, name="watch", daemon=True).start()
        return proc


def check_watchdogs(service: float, node: float, report_interval: float) -> str:
    """Why systemd's watchdog (WatchdogSec, `service` s; 0: none) could restart a hung
    agent before the node's watchdog (`node` s: watchdog_timeout) resets the node, or
    ''. A hung agent's last WATCHDOG=1 may be up to half of WatchdogSec plus one turn
    of the loop (at most report_interval) old when it hangs, so systemd restarts it
    after WatchdogSec/2 - report_interval at the soonest; the node must reset first."""
    if not service or service / 2 - report_interval > node:
        return ""
    return (f"systemd's WatchdogSec ({service:g}s) is too short for watchdog_timeout ({node:g}s): it must exceed "
            f"2 x (watchdog_timeout + report_interval) = {2 * (node + report_interval):g}s, or systemd restarts a "
            "hung agent before the node's watchdog resets it, and the new agent pets the node's watchdog while this "
            "HN may be cut off; raise WatchdogSec in ctagent.service")


def _diff(old: dict[int, str], new: dict[int, str]) -> str:
    parts = []
    for ctid in sorted(old.keys() | new.keys()):
        a, b = old.get(ctid, "absent"), new.get(ctid, "absent")
        if a != b:
            parts.append(f"CT {ctid} {a} -> {b}")
    return ", ".join(parts)
