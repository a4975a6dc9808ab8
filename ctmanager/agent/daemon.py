"""`ctagent run`: observe the runtime, send signed state reports, fence.

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
"""

from __future__ import annotations

import logging
import json
import os
import select
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

from ..wire import reports
from ..fencing.guard import FenceGuard, FenceStep
from ..fencing.quorum import MANAGER, Membership
from ..fencing.watchdog import Watchdog
from ..monitoring.metrics import MetricsSender, cgroup_stats
from ..files import write_atomic
from .apply import SpecStore, ct_lock, committed
from .config import AgentConfig
from .drivers import Driver, DriverError

log = logging.getLogger(__name__)
POLL = 0.25  # s between observations when the runtime has no event stream
CGROUP_ROOT = Path("/sys/fs/cgroup")


class Agent:
    def __init__(self, config: AgentConfig, driver: Driver, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.driver = driver
        self.clock = clock
        self.boot_id = str(uuid.uuid4())  # per agent start: seq restarts, the manager sees a new boot
        self.seq = 0
        self.since: dict[int, tuple[str, float]] = {}  # CTID -> (OPST, since when)
        self.specs = SpecStore(config.state_dir)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(config.listen)
        self.sock.setblocking(False)
        self.receiver = reports.Receiver(config.key, config.rack)
        now = clock()
        self.membership = Membership(config.hn, config.voters | {config.hn, MANAGER}, config.timers.fence_after, now)
        self.guard = FenceGuard(self.membership, started=now, lookahead=config.report_interval)
        self.watchdog = Watchdog(config.watchdog, config.timers.watchdog_timeout)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self.stopping = threading.Event()
        self._send_errors: set[str] = set()
        self.metrics = MetricsSender(config.graphite, config.metrics_prefix)

    def observe(self) -> dict[int, str]:
        return self.driver.observe()

    def report(self, states: dict[int, str], now: float) -> reports.Report:
        for ctid, opst in states.items():
            if self.since.get(ctid, ("", 0.0))[0] != opst:
                self.since[ctid] = (opst, now)
        for ctid in set(self.since) - set(states):
            del self.since[ctid]
        mem_used, disk_used = committed(self.specs, states)
        cfg = self.config
        self.seq += 1
        return reports.Report(
            rack=cfg.rack, hn=cfg.hn, boot_id=self.boot_id, seq=self.seq, sent_at=now,
            drained=cfg.drain_flag.exists(), fenced=self.guard.fenced, hears=self.membership.hears(now),
            metrics=reports.Metrics(
                cpu_load=round(os.getloadavg()[0] / (os.cpu_count() or 1), 3),
                mem_total=cfg.memory, mem_free=max(cfg.memory - mem_used, 0),
                disk_total=cfg.disk, disk_free=max(cfg.disk - disk_used, 0),
                ct_count=sum(1 for s in states.values() if s == "UP"),
            ),
            cts=tuple(reports.CtState(c, o, s) for c, (o, s) in sorted(self.since.items())),
        )

    def send(self, report: reports.Report) -> None:
        datagram = reports.sign(report, self.config.key)
        for addr in self.config.report_to:
            try:
                self.sock.sendto(datagram, addr)
            except OSError as exc:
                key = f"{addr}: {exc.strerror}"
                if key not in self._send_errors:  # once per destination and error
                    self._send_errors.add(key)
                    log.warning("cannot send reports to %s:%d: %s", addr[0], addr[1], exc.strerror)

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

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except OSError:
            pass  # the pipe is full: a wake-up is pending anyway

    def listen(self, now: float) -> None:
        """Take in the peers' reports and the manager's heartbeats (verified)."""
        for _ in range(256):
            try:
                data, addr = self.sock.recvfrom(65536)
            except BlockingIOError:
                return
            report = self.receiver.receive(data, addr[0], now)
            if report is not None:
                self.membership.hear(report.hn, report.sent_at, now, report.hears)

    def fence(self, now: float, states: dict[int, str] | None) -> FenceStep:
        """One round of the fence: stop what must stop, pet the watchdog if safe,
        and tell `ctagent apply` (a separate process) whether it may start CTs."""
        running = {c for c, o in (states or {}).items() if o == "UP"}
        step = self.guard.step(now, running)
        if step.news:
            (log.error if step.fenced else log.warning)("%s", step.news)
        for ctid in step.stop:
            try:
                with ct_lock(self.config, ctid):
                    self.driver.stop(ctid)
                log.warning("fenced: stopped CT %d", ctid)
            except DriverError as exc:
                log.error("fenced: cannot stop CT %d: %s; the watchdog is not petted", ctid, exc)
        if states is None:
            pass  # the runtime cannot be observed: nobody knows what runs, so no pet
        elif step.pet or (step.stop and not self._still_running(step.stop)):
            self.watchdog.pet()
        write_atomic(self.config.fence_file, json.dumps({"fenced": step.fenced, "at": now}).encode(), 0o644)
        return step

    def _still_running(self, ctids: tuple[int, ...]) -> bool:
        try:
            states = self.driver.observe()
        except DriverError:
            return True
        return any(states.get(c) == "UP" for c in ctids)

    def run(self) -> None:
        watcher = self._watch()
        interval = self.config.report_interval
        last: dict[int, str] | None = None
        last_sent = 0.0
        log.info("ctagent %s (rack %d, %s runtime) reporting to %s every %gs; %d voters, fence_after %gs, watchdog %s",
                 self.config.hn, self.config.rack, self.driver.name,
                 ", ".join(f"{h}:{p}" for h, p in self.config.report_to), interval, len(self.membership.voters),
                 self.config.timers.fence_after, self.config.watchdog)
        while not self.stopping.is_set():
            now = self.clock()
            self.listen(now)
            try:
                states = self.observe()
            except DriverError as exc:
                log.warning("cannot observe the runtime: %s; no report sent (the manager will see this HN go stale)", exc)
                states = None
            step_due = now - last_sent >= interval
            if step_due or (self.guard.fenced and states and "UP" in states.values()):
                if self.fence(now, states).stop:
                    states = self._observe_or(states)
            if states is not None and (states != last or step_due):
                if last is not None and states != last:
                    log.info("state changed: %s", _diff(last, states))
                report = self.report(states, now)
                self.send(report)
                if step_due:
                    self.send_metrics(report, now)
                last, last_sent = states, now
            wait = interval - (self.clock() - last_sent)
            if watcher is None:
                wait = min(wait, POLL)
            ready, _, _ = select.select([self.sock, self._wake_r], [], [], max(wait, 0.01))
            if self._wake_r in ready:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
        if watcher is not None and watcher.poll() is None:
            watcher.terminate()
        self._shutdown()

    def _observe_or(self, states: dict[int, str] | None) -> dict[int, str] | None:
        try:
            return self.observe()
        except DriverError:
            return states

    def _shutdown(self) -> None:
        try:
            running = [c for c, o in self.observe().items() if o == "UP"]
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


def _diff(old: dict[int, str], new: dict[int, str]) -> str:
    parts = []
    for ctid in sorted(old.keys() | new.keys()):
        a, b = old.get(ctid, "absent"), new.get(ctid, "absent")
        if a != b:
            parts.append(f"CT {ctid} {a} -> {b}")
    return ", ".join(parts)
