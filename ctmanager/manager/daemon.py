"""`ctmanager run`: the per-rack manager daemon.

One thread owns the store and the decisions (manager/core.py, shared with the
fault simulator); SSH actions run in the executor's pool and their results come
back through a queue. Each tick:
  1. take in datagrams (verified, stale/forged/malformed ones dropped and counted);
  2. take in finished actions (journal, rejections);
  3. every `report_interval`, send the signed heartbeat the agents count the
     manager's vote by;
  4. plan the CTs whose observed state changed at once, and every CT every
     `full_plan_every` or when another process changed the store (a CLI edit);
  5. record placements and intents, then hand the actions to the executor.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import subprocess
import threading
import time
import uuid
from typing import Callable

from ..store import queries
from ..wire.spec import spec_for
from ..executor.runner import Executor, Result
from ..fencing.quorum import MANAGER
from ..dc.model import DcTemplate
from ..store import loop as persist
from ..wire.reports import Metrics, Receiver, Report, sign
from ..store import Store
from .config import ManagerConfig
from ..dnsroutes.worker import DnsWorker
from ..monitoring.metrics import Metrics as MetricsSender
from .core import Core

log = logging.getLogger(__name__)
MAX_BATCH = 512  # datagrams taken per tick before planning
FENCE_TIMEOUT = 60.0  # s a fence command may take
NO_METRICS = Metrics(0.0, 0, 0, 0, 0, 0)


class Manager:
    def __init__(self, store: Store, dc: DcTemplate, config: ManagerConfig, executor: Executor,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.dc, self.config, self.executor, self.clock = store, dc, config, executor, clock
        self.receiver = Receiver(config.key, config.slot)
        self.results: queue.Queue[tuple[int, Result]] = queue.Queue()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(config.listen)
        self.sock.setblocking(False)
        self.stopping = False
        self.pending_reports: dict[str, tuple[Report, float]] = {}
        self._data_version = -1
        self.boot_id = str(uuid.uuid4())
        self.seq = 0
        self.agents: list[tuple[str, int]] = []  # where heartbeats go: each HN's agent
        self.hn_ips: dict[str, str] = {}
        self.fence_results: queue.Queue[tuple[str, int, str]] = queue.Queue()
        self._send_errors: set[str] = set()
        self.core: Core | None = None
        self.dns = DnsWorker(store.path)
        self.metrics = MetricsSender(config.graphite, config.metrics_prefix)
        self.issued = 0  # actions handed to the executor (for benchmarks and logs)

    @property
    def busy(self) -> dict[tuple[int, str], float]:
        return self.core.busy if self.core else {}

    def _reload_if_changed(self, now: float) -> bool:
        version = self.store.one("PRAGMA data_version")[0]
        if version == self._data_version:
            return False
        self._data_version = version
        configured = persist.configured(self.store, self.dc, self.config.slot)
        placements = persist.placements(self.store, now)
        self.dns.poke()  # the store changed: records may have too (the worker finds out cheaply)
        if self.core is None:
            self.core = Core(configured, placements, self.config.settings, self.config.timers, now,
                             persist.observed(self.store))
        else:
            self.core.reconfigure(configured, placements)
        nodes = [n for n in queries.nodes(self.store, rack=self.config.slot) if n.role == "compute"]
        self.agents = [(n.ip, self.config.agent_port) for n in nodes]
        self.hn_ips = {n.hostname: n.ip for n in nodes}
        return True

    def start(self) -> None:
        now = self.clock()
        with self.store.transaction():
            lost = persist.interrupted(self.store, now)
        if lost:
            log.warning("resuming: %d action(s) were in flight when the manager stopped (%s); replanning them",
                        len(lost), "; ".join(lost[:5]))
        self._reload_if_changed(now)
        assert self.core is not None
        self.dns.start()
        t = self.config.timers
        log.info("manager of rack-%d listening on %s:%d; %d CTs, %d HNs; fence_after %gs, dead_after %gs",
                 self.config.slot, *self.config.listen, len(self.core.configured.cts), len(self.core.configured.hns),
                 t.fence_after, t.dead_after)

    def run(self) -> None:
        self.start()
        next_full = next_beat = 0.0
        while not self.stopping:
            now = self.clock()
            wait = max(min(next_full - now, next_beat - now, 0.05 if self.busy else 0.5), 0.0)
            select.select([self.sock], [], [], wait)
            now = self.clock()
            if now >= next_beat:
                self.heartbeat(now)
                next_beat = now + self.config.report_interval
            changed = self._take_reports(now) | self._take_results(now)
            full = self._reload_if_changed(now) or now >= next_full
            if full:
                next_full = now + self.config.full_plan_every
            if full or changed:
                self.tick(now, None if full else changed)

    def heartbeat(self, now: float) -> None:
        assert self.core is not None
        self.seq += 1
        beat = Report(self.config.slot, MANAGER, self.boot_id, self.seq, now, False, NO_METRICS, (),
                      False, self.core.hears(now))
        datagram = sign(beat, self.config.key)
        for addr in self.agents:
            try:
                self.sock.sendto(datagram, addr)
            except OSError as exc:
                key = f"{addr[0]}: {exc.strerror}"
                if key not in self._send_errors:
                    self._send_errors.add(key)
                    log.warning("cannot send heartbeats to %s:%d: %s", addr[0], addr[1], exc.strerror)

    def _take_reports(self, now: float) -> set[int]:
        assert self.core is not None
        changed: set[int] = set()
        for _ in range(MAX_BATCH):
            try:
                data, addr = self.sock.recvfrom(65536)
            except BlockingIOError:
                break
            report = self.receiver.receive(data, addr[0], now)
            if report is None:
                continue
            changed |= self.core.heard(report, now)
            if report.hn in self.core.configured.hns:
                self.pending_reports[report.hn] = (report, now)
        return changed

    def _take_results(self, now: float) -> set[int]:
        assert self.core is not None
        changed: set[int] = set()
        finished = []
        while True:
            try:
                jid, r = self.results.get_nowait()
            except queue.Empty:
                break
            finished.append((jid, r))
            self.core.finished(r.action, r.result, now)
            changed.add(r.action.ctid)
            self.metrics.send(f"results.{r.result}", 1, now)
            self.metrics.send("action_seconds", r.seconds, now)
        if finished:
            with self.store.transaction():
                for jid, r in finished:
                    persist.finish(self.store, jid, r.action, r.result, r.message, now, self.config.settings)
        while True:
            try:
                hn, rc, detail = self.fence_results.get_nowait()
            except queue.Empty:
                break
            if rc == 0:
                log.warning("fence command: %s is off; it is dead now", hn)
                self.core.fenced_off(hn, now)
                changed |= set(self.core.configured.cts)
            else:
                log.error("fence command for %s failed (%s); waiting dead_after instead", hn, detail)
        return changed | self.core.expire(now)

    def tick(self, now: float, only: set[int] | None) -> None:
        core = self.core
        assert core is not None
        started = time.perf_counter()
        d = core.decide(now, only)
        for line in d.view.news:
            (log.warning if "DEAD" in line or "NO QUORUM" in line else log.info)("%s", line)
        for alarm in d.plan.alarms:
            log.error("%s", alarm)
        cfg = core.configured
        with self.store.transaction():
            if d.plan.place:
                persist.save_placements(self.store, dict(d.plan.place), now)
            ids = persist.journal(self.store, d.actions, now)
            if self.pending_reports:
                persist.save_reports(self.store, self.pending_reports.values())
                self.pending_reports.clear()
            persist.save_observed(self.store, cfg, core.observed, core.placements, now, self.config.settings, only)
            if only is None and cfg.removed:
                for ctid in persist.forget_removed(self.store, cfg, core.observed, now, self.config.settings):
                    log.info("CT %d is gone from every HN; forgetting it", ctid)
        self._data_version = self.store.one("PRAGMA data_version")[0]
        if only is None:
            for note in d.plan.notes:
                log.debug("%s", note)
        if self.config.fence_command and d.view.quorum:
            for hn in core.to_fence(now):
                self._fence(hn)
        if only is None:  # one figure per full plan (every full_plan_every): the loop's pulse
            self.metrics.send_many({"plan_ms": (time.perf_counter() - started) * 1000, "actions": len(d.actions),
                                    "quorum": int(d.view.quorum), "dead_hns": len(d.view.dead),
                                    "alarms": len(d.plan.alarms), "in_flight": len(core.busy)}, now)
        for jid, a in zip(ids, d.actions):
            log.info("%s", a)
            self.issued += 1
            self.executor.submit([a], lambda c: spec_for(cfg.cts[c], self.dc) if c in cfg.cts else None,
                                 lambda r, jid=jid: self.results.put((jid, r)))

    def _fence(self, hn: str) -> None:
        """Run the fence command for a silent HN in the background. Its arguments may
        hold a BMC password: they are never logged."""
        argv = [a.replace("{hn}", hn).replace("{ip}", self.hn_ips.get(hn, "")) for a in self.config.fence_command]
        log.warning("%s silent for %gs: running the fence command (%s)", hn, self.config.timers.fence_after, argv[0])

        def run() -> None:
            try:
                p = subprocess.run(argv, capture_output=True, text=True, timeout=FENCE_TIMEOUT, stdin=subprocess.DEVNULL)
                tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or [""]
                self.fence_results.put((hn, p.returncode, f"exit {p.returncode}: {tail[0][:200]}"))
            except (OSError, subprocess.TimeoutExpired) as exc:
                self.fence_results.put((hn, -1, type(exc).__name__))

        threading.Thread(target=run, name=f"fence-{hn}", daemon=True).start()

    def stop(self) -> None:
        self.stopping = True
        self.dns.stopping.set()
        self.dns.poke()
