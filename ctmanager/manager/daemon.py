"""`ctmanager run`: the per-rack manager daemon, one loop over its ports.

`Manager` is the whole daemon; its surroundings are ports (manager/ports.py):
the clock, the transport (signed UDP reports in, heartbeats out), the store,
the executor (SSH), the fencer and the decision log. `ctmanager run` plugs in
the real ones; the simulator (ctmanager/sim) plugs in simulated ones and runs
this same class, store reads and writes included. The decisions themselves are
in manager/core.py and plan().

A rack may run several managers; one leads (manager/leadership.py: a lease in
the store, with an epoch). The others are standbys: they hear every report and
keep the rack's observed state warm, and do nothing else (no heartbeat, no vote,
no action, no write but their check-in). Every write of the leader is fenced by
its lease (Store.fence), and every action and heartbeat carries its epoch.

One `step(now)`:
  0. the lease: a standby that hears a quorum takes a free one; a leader renews
     it, and stops leading at once when it cannot, or when it had no quorum for
     `fence_after` (then it lets the lease go, so a standby that can lead does);
  1. (leader) every `report_interval`, send the signed heartbeat the agents
     count the manager's vote by;
  2. take in verified, fresh reports and (leader) finished actions (journaled);
  3. reload the configuration when its change counter moved (a CLI edit: the
     daemon's own writes never move it, so none is missed or mistaken);
  4. (leader) plan the CTs whose observed state changed at once, and every CT
     every `full_plan_every` or after a reload;
  5. (leader) record placements (check-then-act against concurrent `ct move`), intents
     and observed state in one transaction, then hand the actions out;
  6. step the leader-only workers (ports.Worker: the DNS publisher, the backup
     watch): they take in their finished jobs and, leading, hand out what is due.
A store that is busy or broken costs a step, never the daemon: nothing decided
in a failed step is executed, and the step is retried.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from ..dc.model import DcTemplate
from ..errors import StoreError
from ..fencing.quorum import MANAGER
from ..monitoring.metrics import MetricsSender
from ..reconcile.state import Action
from ..sdnotify import Notifier
from ..store import lease as leases
from ..store import loop as persist
from ..store import moves, retention
from ..store.watch import POLL as WATCH_POLL
from ..wire.reports import Metrics, Receiver, Report
from ..wire.results import ActionResult
from ..wire.spec import spec_for
from .config import ManagerConfig
from .core import Core, reports_to_save
from .effects import Storage
from .leadership import Leadership, takeover_budget
from .leading import PRUNE_EVERY, Leading
from .ports import CommandFencer, Events, Fencer, Mailbox, ManagerEnv, Pending, Transport, Worker
from .reloading import CONFIG_CHECK_EVERY as CONFIG_CHECK_EVERY
from .reloading import Reloading
from .workflows import IDLE_EVERY, MOVES_EVERY, Workflows

log = logging.getLogger(__name__)
NO_METRICS = Metrics(0.0, 0, 0, 0, 0, 0)
TROUBLE_EVERY = 30.0  # s between two log lines about the same store trouble
HOLD_CHECK_EVERY = 5.0  # s between looks for tenant moves out of this rack whose destination vanished
HOLD_GRACE = 30.0  # s past a held move's deadline before this rack lets it go (its runner may be taking over)


class Manager(Reloading, Leading, Workflows):
    def __init__(self, dc: DcTemplate, config: ManagerConfig, env: ManagerEnv, *, holder: str | None = None,
                 poll: bool = True, notifier: Notifier | None = None) -> None:
        """`env`: its surroundings (manager/ports.ManagerEnv). `poll`: wake at least
        every 0.5 s (0.05 s with actions or storage work in flight, whose results
        come from threads); the simulator wakes the loop itself. With `env.watch`
        a configuration edit is taken in at once (PostgreSQL: its NOTIFY wakes the
        loop; SQLite: checked every watch.POLL s) rather than at the next
        CONFIG_CHECK_EVERY. `holder`: what the lease and `manager status` say of
        this process. `notifier`: systemd's (sdnotify; `run()` says READY after its
        first step, and WATCHDOG at every turn of the loop)."""
        store = env.store
        self.env = env
        self.store, self.dc, self.config, self.executor, self.clock = store, dc, config, env.executor, env.clock
        self.transport: Transport = env.transport
        self.events: Events = env.events
        self.fencer: Fencer | None = env.fencer if env.fencer is not None else (
            CommandFencer(config.fence_command) if config.fence_command else None)
        self.dns = env.dns
        self.metrics = env.metrics or MetricsSender(config.graphite, config.metrics_prefix)
        self.receiver = env.receiver or Receiver(config.key, config.slot)
        self.holder = holder or f"ctmanager run pid {os.getpid()} on {socket.gethostname()}"
        # Filled by executor, fence and storage threads; each append rings the loop awake (run()).
        self.bell = env.bell
        self.results: deque[tuple[int, Any, int]] = Mailbox(self.bell)  # (journal id, executor Result, epoch)
        self.fence_results: deque[tuple[str, int, str]] = Mailbox(self.bell)
        self.stopping = False
        self.pending_reports: dict[str, tuple[Report, float]] = {}
        self.unjournaled: list[tuple[int, Any]] = []  # finished actions whose outcome is not in the store yet
        self.boot_id = str(uuid.uuid4())  # also the lease's instance: a restart leads with a new epoch
        self.leadership = Leadership(store, config.slot, config.name, self.boot_id, self.holder, config.lease_ttl,
                                     env.mono)
        store.fence = self.leadership.check  # every write of this manager needs its lease
        self.storage: Storage | None = env.storage
        self.dns_pending: Pending | None = env.dns_pending
        self.move_results: deque[tuple[int, str, int, Any]] = Mailbox(self.bell)  # (move, step key, epoch, Outcome)
        self._init_workflows()
        # Leader-only work stepped by this loop (ports.Worker); their jobs' writes are fenced by this lease.
        self.workers: list[Worker] = ([env.dns] if env.dns is not None else []) + list(env.workers)
        for w in self.workers:
            w.lease_of = self.lease
        self.seq = 0
        self.agents: list[tuple[str, int]] = []  # where heartbeats go: each HN's agent
        self.hn_ips: dict[str, str] = {}
        self.core: Core | None = None
        self.issued = 0  # actions handed to the executor (for benchmarks and logs)
        self.started_at = 0.0
        self._init_reloading(env.watch)
        self.notifier = notifier or Notifier()
        self.next_beat = self.next_full = 0.0
        self.next_prune = 0.0
        self.next_hold_check = 0.0
        self._trouble: dict[str, float] = {}
        self.poll = poll
        self._observed_rows: dict[int, persist.ObservedRow] = {}  # what the store's status view holds
        self._saved_reports: dict[str, tuple[Any, float, Metrics]] = {}  # HN -> (what its saved body says, when)
        self.next_check_in = 0.0
        self.quorum_at = 0.0  # when the leader last had quorum (or took the lease), on the monotonic clock
        self.heard_at = -1e18  # when the newest report arrived

    # ---- life cycle --------------------------------------------------------
    def start(self) -> None:
        now = self.clock()
        self.started_at = now
        self._reload_if_changed(now)
        assert self.core is not None
        self._check_in(now)
        t = self.config.timers
        log.info("manager %s of rack-%d (%s), standby until it leads; %d CTs, %d HNs; lease ttl %gs, "
                 "fence_after %gs, dead_after %gs", self.config.name, self.config.slot, self.holder,
                 len(self.core.configured.cts), len(self.core.configured.hns), self.config.lease_ttl,
                 t.fence_after, t.dead_after)
        if self.config.lease_ttl >= takeover_budget(t.fence_after, self.config.report_interval):
            log.warning("lease ttl %gs is not below %gs (fence_after - 2 x report_interval - the standby's look): "
                        "while a standby takes over, the HNs of a rack with an HN down (they need the manager's "
                        "vote) may fence", self.config.lease_ttl,
                        takeover_budget(t.fence_after, self.config.report_interval))

    def run(self) -> None:
        self.start()
        bell = self.bell.open()
        try:
            while not self.stopping:
                wake = self.step(self.clock())
                self.notifier.ready(f"manager {self.config.name} of rack-{self.config.slot}")
                self.notifier.alive()  # a stuck step stops these: systemd restarts the daemon (WatchdogSec)
                timeout, also = wake - self.clock(), (bell,)  # type: tuple[float, tuple[int, ...]]
                if self.watch is not None:
                    fd = self.watch.fileno()
                    also = (bell,) if fd is None else (bell, fd)
                    timeout = timeout if fd is not None else min(timeout, WATCH_POLL)
                self.transport.wait(timeout, also)
                self.bell.clear()
            self.notifier.stopping("stopping: waiting for the actions in flight, then releasing the lease")
            self._drain()
        finally:
            self.bell.close()
            for w in self.workers:
                w.close()
            if self.leadership.step_down("stopping", 0.0) is not None:
                log.info("manager %s: stopped; the lease of rack-%d is released", self.config.name, self.config.slot)
            try:
                self._check_in(self.clock(), "stopped")
            except StoreError as exc:
                log.warning("could not check out of rack-%d in the store: %s", self.config.slot, exc)

    def stop(self) -> None:
        self.stopping = True

    def step(self, now: float, act: bool = True) -> float:
        """One round; returns when the next round is due at the latest. `act=False`:
        everything but planning (a stopping daemon waiting for its actions)."""
        assert self.core is not None
        if self.store.lost_locks and not self.stopping:
            self._twin(now)
        changed = self._take_reports(now)
        self._lead(now)
        leading = self.leading
        if leading and now >= self.next_beat:
            self.heartbeat(now)
            self.next_beat = now + self.config.report_interval
        if leading:
            results = self._take_results(now)
            if results:  # a stop that proves a held CT down, a start a move waits for: look at once
                self.next_moves = min(self.next_moves, now)
            changed |= results
        full = self._take_config(now, now >= self.next_full)
        if full:
            self.next_full = now + self.config.full_plan_every
        if leading and act and (full or changed):
            self.tick(now, None if full else changed)
        if now >= self.next_check_in:
            self._store_step("check-in", lambda: self._check_in(now), now)
        if leading and (now >= self.next_moves or self.move_results):
            busy = self._store_step("moves", lambda: self._workflows(now), now)
            self.next_moves = now + (MOVES_EVERY if busy is True else IDLE_EVERY)
        if leading and now >= self.next_hold_check:
            self.next_hold_check = now + HOLD_CHECK_EVERY
            self._store_step("moves", lambda: self._release_overdue_holds(), now)
        if leading and now >= self.next_prune:
            self.next_prune = now + PRUNE_EVERY
            self._store_step("prune", lambda: self._prune(now), now)
        for w in self.workers:  # (a stopping daemon, draining, starts no new job)
            w.step(now, leading and act)
        wake = min(self.next_full, self.next_check_in, self.next_beat if leading else self.next_full,
                   self.next_moves if leading else self.next_full,
                   now + max(self.leadership.due_in(), 0.001),  # the lease's renewal, a standby's next look
                   *(w.due(now) for w in self.workers))
        return min(wake, now + (0.05 if self.busy or self._inflight else 0.5)) if self.poll else wake

    # ---- inputs --------------------------------------------------------------
    def heartbeat(self, now: float) -> None:
        if self.core is None:
            return
        self.seq += 1
        beat = Report(self.config.slot, MANAGER, self.boot_id, self.seq, now, False, NO_METRICS, (),
                      False, self.core.hears(now), self.leadership.epoch)
        self.transport.send(beat, self.agents)

    def _take_reports(self, now: float) -> set[int]:
        assert self.core is not None
        changed: set[int] = set()
        hns = self.core.configured.hns
        for report in self.transport.receive(self.receiver, now):
            self.heard_at = now
            changed |= self.core.heard(report, now)
            if report.hn in hns:
                self.pending_reports[report.hn] = (report, now)
        return changed

    def _take_results(self, now: float) -> set[int]:
        assert self.core is not None
        changed: set[int] = set()
        epoch = self.leadership.epoch
        while self.results:
            jid, r, of_epoch = self.results.popleft()
            if of_epoch != epoch:
                continue  # an action of an earlier leadership: its intent was closed and replanned
            if r.result == ActionResult.STALE:  # an HN has seen a newer epoch: another manager leads
                self.events.leadership(f"{r.action.hn} refused {r.action.kind} {r.action.ctid}: {r.message}")
                change = self.leadership.step_down("an HN has seen a newer epoch", self.config.lease_ttl)
                if change is not None:
                    self._stepped_down(now, change)
                return set()
            self.unjournaled.append((jid, r))
            self.core.finished(r.action, r.result, now)
            changed.add(r.action.ctid)
            self.events.result(r.action, r.result, r.message, r.seconds)
            self.metrics.send(f"results.{r.result}", 1, now)
            self.metrics.send("action_seconds", r.seconds, now)
        if self.unjournaled:
            self._store_step("journal", lambda: self._journal_results(now), now)
        while self.fence_results:
            hn, rc, detail = self.fence_results.popleft()
            self.events.fenced(hn, rc == 0, detail)
            if rc == 0:
                self.core.fenced_off(hn, now)
                changed |= set(self.core.configured.cts)
        return changed | self.core.expire(now)

    def _journal_results(self, now: float) -> None:
        with self.store.transaction(config=False):
            for jid, r in self.unjournaled:
                persist.finish(self.store, jid, r.action, r.result, r.message, now, self.config.settings,
                               self.config.slot)
        self.unjournaled.clear()

    # ---- deciding and acting -------------------------------------------------
    def tick(self, now: float, only: set[int] | None) -> None:
        core = self.core
        assert core is not None
        started = time.perf_counter()
        d = core.decide(now, only)
        loops = list(core.new_crash_loops)  # CTs found crash looping: recorded with this plan
        for line in d.view.news:
            self.events.news(line)
        for alarm in d.plan.alarms:
            self.events.alarm(alarm)
        cfg = core.configured
        written: list[tuple[Action, int]] = []
        lost: set[int] = set()
        full = only is None
        fresh = not self._observed_rows  # the store's status rows are unknown: rewrite them all
        rows, gone = persist.observed_changes(cfg, core.observed, core.placements, now, self.config.settings,
                                              only, self._observed_rows)
        bodies, times, saved = reports_to_save(self.pending_reports, self._saved_reports, full)
        if d.view.quorum:
            self.quorum_at = self.leadership.mono()
        slot = self.config.slot

        def commit() -> None:
            """The second half: record, then hand out (a stalled process runs it late)."""
            def record() -> None:
                nonlocal written, lost
                with self.store.transaction(config=False):
                    if d.plan.place:
                        lost = persist.save_placements(self.store, d.plan.place, now, d.was)
                    written = persist.journal(self.store, [a for a in d.actions if a.ctid not in lost], now, slot,
                                              self.leadership.epoch)  # re-checked against the CTs' rows
                    persist.save_reports(self.store, bodies)
                    persist.touch_reports(self.store, times)
                    persist.save_observed(self.store, rows, gone, self._observed_rows, slot, everything=fresh and full)
                    persist.mark_crash_loops(self.store, loops, now)
                    if full and cfg.removed:
                        for ctid in persist.forget_removed(self.store, cfg, core.observed, now, self.config.settings, slot):
                            log.info("CT %d is gone from every HN; forgetting it", ctid)

            # A steady rack between full plans writes nothing: no transaction at all.
            if (d.plan.place or d.actions or bodies or times or rows or gone or loops
                    or (full and cfg.removed) or (fresh and full)) and not self._store_step("tick", record, now):
                core.abandon(d.actions)  # nothing of this plan is recorded: none of it runs
                self._config_token = None  # and the next step reloads placements from the store
                self._observed_rows.clear()  # unknown what the store holds: the next full plan rewrites it
                return
            self._saved_reports.update(saved)
            del core.new_crash_loops[:len(loops)]  # a failed step keeps them queued (and the CTs down)
            for ctid, count in loops:
                self.events.crash_loop(ctid, count, self.config.settings.crash_window)
            for hn in saved.keys() | {hn for hn, _ in times}:
                self.pending_reports.pop(hn, None)
            actions = [a for a in d.actions if a.ctid not in lost]
            dropped = [a for a in actions if a not in {k for k, _ in written}]
            if dropped:  # the configuration changed under this plan (a hold, a flip, ct set): replanned
                core.abandon(dropped)
                self._config_token = None
                log.info("dropped before handing out (their CTs' rows changed meanwhile): %s",
                         "; ".join(f"{a.kind} {a.ctid} on {a.hn}" for a in dropped))
            if lost:
                core.abandon(a for a in d.actions if a.ctid in lost)
                self._config_token = None
                log.info("placement of CT(s) %s changed while planning (ct move?); replanning",
                         ", ".join(map(str, sorted(lost))))
            if only is None:
                for note in d.plan.notes:
                    self.events.note(note)
            if self.fencer is not None and d.view.quorum:
                for hn in core.to_fence(now):
                    self.events.fencing(hn, self.config.timers.fence_after, (self.config.fence_command or ("fence",))[0])
                    self.fencer.fence(hn, self.hn_ips.get(hn, ""), lambda *r: self.fence_results.append(r))
            if only is None:  # one figure per full plan (every full_plan_every): the loop's pulse
                self.metrics.send_many({"plan_ms": (time.perf_counter() - started) * 1000, "actions": len(actions),
                                        "quorum": int(d.view.quorum), "dead_hns": len(d.view.dead),
                                        "alarms": len(d.plan.alarms), "in_flight": len(core.busy)}, now)
            if not self.leading:  # the lease ran out while recording: the next leader replans these intents
                core.abandon(actions)
                return
            self._hand_out_all(written, cfg.cts)

        self._after_decide(commit)

    def _after_decide(self, commit: Callable[[], None]) -> None:
        """Between deciding and recording: the real daemon goes straight on; the
        simulator may stall here (GC, CPU, a slow store) to try the races of that gap."""
        commit()

    def _hand_out(self, jid: int, a: Action, cts: Any) -> None:
        self.events.action(a)
        self.issued += 1
        epoch = self.leadership.epoch

        def done(result: Any) -> None:
            self.results.append((jid, result, epoch))

        self.executor.submit([a], lambda c: spec_for(cts[c], self.dc) if c in cts else None, done,
                             self.leadership.epoch)

    # ---- the store -------------------------------------------------------------
    def _workflows(self, now: float) -> bool:
        """Certify this rack's held tenants, then step the moves into it."""
        held = self.certify(now)
        return self.run_moves() or held

    def _hand_out_all(self, kept: list[tuple[Action, int]], cts: Any) -> None:
        for a, jid in kept:
            self._hand_out(jid, a, cts)

    def _store_step(self, what: str, fn: Callable[[], Any], now: float) -> Any:
        """Run a store step; on trouble, say so (at most every TROUBLE_EVERY s per
        kind) and return False: the daemon goes on and the step is retried."""
        try:
            result = fn()
        except StoreError as exc:
            if now - self._trouble.get(what, -1e18) >= TROUBLE_EVERY:
                self._trouble[what] = now
                self.events.trouble(f"store trouble ({what}): {exc}; retrying")
            return False
        if what in self._trouble:
            del self._trouble[what]
            log.info("store: %s works again", what)
        return True if result is None else result

    def _release_overdue_holds(self) -> None:
        """A move out of this rack whose destination lost every manager mid-cutover
        would hold its tenant down here for good: past its deadline + HOLD_GRACE,
        this rack's leader lets it go (store/moves.release_overdue)."""
        now = self.store.now()
        if not moves.overdue(self.store, self.config.slot, now, HOLD_GRACE):
            return  # (the usual case: a read, no write transaction, no configuration change)
        with self.store.transaction():
            released = moves.release_overdue(self.store, self.config.slot, now, HOLD_GRACE,
                                             lambda: set(leases.leaders(self.store)))
        for m in released:
            log.warning("move %d (%s): held past its deadline and rack-%d has no leading manager: released; "
                        "the tenant starts here again", m.id, m.tenant, m.dst)

    def _prune(self, now: float) -> None:
        r = self.config.retention
        j, e = retention.prune(self.store, now, r.journal, r.events, self.config.slot)
        if j or e:
            log.info("retention: dropped %d journal row(s) and %d event(s)", j, e)
