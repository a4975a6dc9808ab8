"""`ctmanager run`: the per-rack manager daemon.

One thread owns the store and the plan; SSH actions run in the executor's pool
and their results come back through a queue. Each tick:
  1. take in datagrams (verified, stale/forged/malformed ones dropped and counted);
  2. take in finished actions (journal, rejections);
  3. plan the CTs whose observed state changed at once, and every CT every
     `full_plan_every` or when another process changed the store (a CLI edit);
  4. record placements and intents, then hand the actions to the executor.
A CT with an action in flight on any HN is not acted on again until every such
action finished and each of those HNs reported after it did (or SETTLE seconds
passed): a move is a destroy on one HN and a start on another, and the first to
finish must not get the other re-issued.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import time
from typing import Callable

from ..agent.spec import spec_for
from ..executor.runner import Executor, Result
from ..model import DcTemplate
from ..reconcile import persist
from ..reconcile.plan import plan
from ..reconcile.state import Observed, Placements
from ..reports import Receiver, Report
from ..store import Store
from .config import ManagerConfig

log = logging.getLogger(__name__)
SETTLE = 3.0  # s after an action before its CT is planned without a fresh report
MAX_BATCH = 512  # datagrams taken per tick before planning


class Manager:
    def __init__(self, store: Store, dc: DcTemplate, config: ManagerConfig, executor: Executor,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.dc, self.config, self.executor, self.clock = store, dc, config, executor, clock
        self.receiver = Receiver(config.key, config.slot)
        self.observed = Observed()
        self.results: queue.Queue[tuple[int, Result]] = queue.Queue()
        self.busy: dict[tuple[int, str], float] = {}  # (CTID, HN) -> settle deadline; inf while running
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(config.listen)
        self.sock.setblocking(False)
        self.stopping = False
        self.pending_reports: dict[str, tuple[Report, float]] = {}
        self._data_version = -1
        self.started_at = clock()
        self.issued = 0  # actions handed to the executor (for benchmarks and logs)

    def _reload_if_changed(self, now: float) -> bool:
        version = self.store.one("PRAGMA data_version")[0]
        if version == self._data_version:
            return False
        self._data_version = version
        self.configured = persist.configured(self.store, self.dc, self.config.slot)
        self.placements = persist.placements(self.store, now)
        return True

    def start(self) -> None:
        now = self.started_at = self.clock()
        with self.store.transaction():
            lost = persist.interrupted(self.store, now)
        if lost:
            log.warning("resuming: %d action(s) were in flight when the manager stopped (%s); replanning them",
                        len(lost), "; ".join(lost[:5]))
        self._reload_if_changed(now)
        log.info("manager of rack-%d listening on %s:%d; %d CTs, %d HNs", self.config.slot, *self.config.listen,
                 len(self.configured.cts), len(self.configured.hns))

    def run(self) -> None:
        self.start()
        next_full = 0.0
        while not self.stopping:
            now = self.clock()
            wait = max(min(next_full - now, 0.05 if self.busy else 0.5), 0.0)
            select.select([self.sock], [], [], wait)
            now = self.clock()
            changed = self._take_reports(now) | self._take_results(now)
            full = self._reload_if_changed(now) or now >= next_full
            if full:
                next_full = now + self.config.full_plan_every
            if full or changed:
                self.tick(now, None if full else changed)

    def _take_reports(self, now: float) -> set[int]:
        changed: set[int] = set()
        for _ in range(MAX_BATCH):
            try:
                data, addr = self.sock.recvfrom(65536)
            except BlockingIOError:
                break
            report = self.receiver.receive(data, addr[0], now)
            if report is None:
                continue
            if not self.observed.known(report.hn, now, self.config.settings):
                changed |= set(self.configured.cts)  # an HN came (back): everything may be placeable now
            changed |= self.observed.update(report, now)
            self.pending_reports[report.hn] = (report, now)
            for (ctid, hn), until in list(self.busy.items()):
                if hn == report.hn and until != float("inf") and report.sent_at >= until - SETTLE:
                    del self.busy[ctid, hn]  # the HN has reported since the action finished
                    changed.add(ctid)
        return changed

    def _take_results(self, now: float) -> set[int]:
        changed: set[int] = set()
        finished = []
        while True:
            try:
                jid, r = self.results.get_nowait()
            except queue.Empty:
                break
            finished.append((jid, r))
            self.busy[r.action.ctid, r.action.hn] = now + SETTLE
            changed.add(r.action.ctid)
        if finished:
            with self.store.transaction():
                for jid, r in finished:
                    persist.finish(self.store, jid, r, now, self.config.settings)
            self.placements = persist.placements(self.store, now)
        for (ctid, hn), until in list(self.busy.items()):
            if until <= now:
                del self.busy[ctid, hn]
                changed.add(ctid)
        return changed

    def tick(self, now: float, only: set[int] | None) -> None:
        cfg = self.configured
        if now - self.started_at < self.config.settings.stale_after and \
                not all(self.observed.known(hn, now, self.config.settings) for hn in cfg.hns):
            return  # just started: let every HN report once before placing, or all CTs land on the first to speak
        p = plan(cfg, self.observed, self.placements, now, only=only, settings=self.config.settings)
        busy = {ctid for ctid, _ in self.busy}
        actions = [a for a in p.actions if a.ctid not in busy]
        with self.store.transaction():
            if p.place:
                persist.save_placements(self.store, dict(p.place), now)
                self.placements = Placements({**self.placements.where, **p.place}, self.placements.rejected)
            ids = persist.journal(self.store, actions, now)
            if self.pending_reports:
                persist.save_reports(self.store, self.pending_reports.values())
                self.pending_reports.clear()
            persist.save_observed(self.store, cfg, self.observed, self.placements, now, self.config.settings, only)
            if only is None and cfg.removed:
                for ctid in persist.forget_removed(self.store, cfg, self.observed, now, self.config.settings):
                    log.info("CT %d is gone from every HN; forgetting it", ctid)
        self._data_version = self.store.one("PRAGMA data_version")[0]
        if only is None:
            for note in p.notes:
                log.debug("%s", note)
        for jid, a in zip(ids, actions):
            log.info("%s", a)
            self.busy[a.ctid, a.hn] = float("inf")
            self.issued += 1
            self.executor.submit([a], lambda c: spec_for(cfg.cts[c], self.dc) if c in cfg.cts else None,
                                 lambda r, jid=jid: self.results.put((jid, r)))

    def stop(self) -> None:
        self.stopping = True
