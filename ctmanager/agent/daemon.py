"""`ctagent run`: observe the runtime, send signed state reports.

A full snapshot goes out every `report_interval` and at once when a CT changes
state. Changes are noticed from the runtime's event stream when it has one
(`lxc-monitor`): a line there only wakes the loop, which then observes the whole
HN again (level-based; a lost or garbled event costs nothing but latency).
Without an event stream the loop polls every POLL seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import time
import uuid
from typing import Callable

from .. import reports
from .apply import SpecStore, committed
from .config import AgentConfig
from .drivers import Driver, DriverError

log = logging.getLogger(__name__)
POLL = 0.25  # s between observations when the runtime has no event stream


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
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._send_errors: set[str] = set()

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
            drained=cfg.drain_flag.exists(),
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

    def run(self) -> None:
        watcher = self._watch()
        interval = self.config.report_interval
        last: dict[int, str] | None = None
        last_sent = 0.0
        log.info("ctagent %s (rack %d, %s runtime) reporting to %s every %gs", self.config.hn, self.config.rack,
                 self.driver.name, ", ".join(f"{h}:{p}" for h, p in self.config.report_to), interval)
        while not self.stopping.is_set():
            now = self.clock()
            try:
                states = self.observe()
            except DriverError as exc:
                log.warning("cannot observe the runtime: %s; no report sent (the manager will see this HN go stale)", exc)
                states = None
            if states is not None and (states != last or now - last_sent >= interval):
                if last is not None and states != last:
                    log.info("state changed: %s", _diff(last, states))
                self.send(self.report(states, now))
                last, last_sent = states, now
            wait = interval - (self.clock() - last_sent)
            if watcher is None:
                wait = min(wait, POLL)
            self.wake.wait(max(wait, 0.01))
            self.wake.clear()
        if watcher is not None and watcher.poll() is None:
            watcher.terminate()

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
                self.wake.set()
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
