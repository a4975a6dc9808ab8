"""The manager's decisions, without I/O: what it heard, what is in flight, who is
dead, and what to do next. `ctmanager run` wraps it with a socket, the store and
the SSH executor; the fault simulator (ctmanager/sim) wraps it with a simulated
network and clock. Both therefore run exactly this logic.

- Reports feed the observed state (HNs) and the quorum membership (every voter).
- A CT with an action in flight on any HN is left alone until every such action
  finished and each of those HNs reported after it did (or SETTLE s passed): a
  move is a destroy on one HN and a start on another, and the first to finish
  must not get the other re-issued.
- The first plan waits until every HN has reported once (or `stale_after`
  passed): otherwise every CT lands on the first HN to speak.
- Failover decides which silent HNs are dead; plan() re-places their CTs.
- Without quorum (mutual contact with a majority of voters) nothing is done.
- Crash loops: every crash restart issued is counted (reconcile/crashes.py); the
  one that reaches `crash_limit` within `crash_window` is not issued, the CT is
  left down (`configured.crash_looped`) and queued in `new_crash_loops` for the
  caller to persist and log, until ops clear it in the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..fencing.failover import Failover, FailoverView
from ..fencing.quorum import MANAGER, Membership
from ..fencing.timers import FenceTimers
from ..reconcile.crashes import CrashCounter
from ..reconcile.plan import plan
from ..reconcile.state import Action, Configured, Observed, Placements, Plan, Settings
from ..wire.reports import Metrics, Report
from ..wire.results import ActionResult

SETTLE = 3.0  # s after an action before its CT is planned without a fresh report
RUNNING = float("inf")


@dataclass(frozen=True)
class Decision:
    plan: Plan
    actions: tuple[Action, ...]  # to execute now (plan actions minus CTs with work in flight)
    view: FailoverView
    was: Mapping[int, str | None] = field(default_factory=dict)  # each new placement's previous value


class Core:
    def __init__(self, configured: Configured, placements: Placements, settings: Settings, timers: FenceTimers,
                 now: float, last_seen: Observed | None = None) -> None:
        """`last_seen`: the HNs' newest reports as the store kept them. A restarted
        manager must know what a now-silent HN last ran: those CTs are left alone
        (that HN is unknown) until it reports or is declared dead."""
        self.settings, self.timers = settings, timers
        self.started_at = now
        self.observed = last_seen or Observed()
        self.busy: dict[tuple[int, str], float] = {}  # (CTID, HN) -> settle deadline; RUNNING while in flight
        self.configured = configured
        self.placements = placements
        self.membership = Membership(MANAGER, frozenset(configured.hns) | {MANAGER}, timers.fence_after, now)
        self.failover = Failover(self.membership, timers.dead_after)
        self.crashes = CrashCounter(settings.crash_limit, settings.crash_window)
        # (CTID, crashes) found in a crash loop: the caller logs them, writes them to the
        # store (store.loop.mark_crash_loops) and only then removes them from here.
        self.new_crash_loops: list[tuple[int, int]] = []
        self._cleared: set[int] = set()
        self._died: set[int] = set()  # CTs seen going from UP to DOWN: their next restart counts as a crash
        self.quorum = False  # the last decision's: it had quorum and was not warming up (it may act)
        # (CTID, HN) -> (epoch, deadline): a predecessor's action that may still run there; its CT
        # waits until that HN reports it settled the epoch (no older action runs), or the deadline
        self.awaiting: dict[tuple[int, str], tuple[int, float]] = {}

    def reconfigure(self, configured: Configured, placements: Placements) -> None:
        """New configured state or placements from the store (a CLI edit)."""
        if self.new_crash_loops:  # found but not in the store yet: still looping
            looped = {**configured.crash_looped, **dict(self.new_crash_loops)}
            configured = replace(configured, crash_looped=looped)
        for ctid in self.configured.crash_looped.keys() - configured.crash_looped.keys():
            self.crashes.forget(ctid)  # cleared by ops: counted from zero again,
            self._cleared.add(ctid)  # and the start that follows is no new crash
        self.configured, self.placements = configured, placements
        voters = frozenset(configured.hns) | {MANAGER}
        if voters != self.membership.voters:
            self.membership.voters = voters

    def heard(self, report: Report, now: float) -> set[int]:
        """A verified report (or a peer's heartbeat). Returns the CTIDs to plan again."""
        m = self.membership
        was = m.mutual_at.get(report.hn, -1e18)
        m.hear(report.hn, report.sent_at, now, report.hears)
        if report.hn not in self.configured.hns:
            return set()
        changed: set[int] = set()
        if not self.observed.known(report.hn, now, self.settings) or (
                now - was > m.window >= now - m.mutual_at.get(report.hn, -1e18)):
            # An HN came (back), or is in contact both ways again (quorum may follow):
            # everything may be placeable now; plan at once, not at the next full plan.
            changed |= set(self.configured.cts)
        old = self.observed.reports.get(report.hn)
        moved = self.observed.update(report, now)
        if (moved and old is not None and old.boot_id == report.boot_id and report.seq == old.seq + 1
                and not (old.fenced or report.fenced)):
            # A CT seen UP in one report and DOWN in the very next has died by itself:
            # not stopped by the HN's fence (that report says fenced; with one lost in
            # between nobody can tell), not gone with a reboot of the HN.
            was_up = {c.ctid for c in old.cts if c.opst == "UP"}
            self._died |= {c.ctid for c in report.cts if c.opst == "DOWN" and c.ctid in was_up}
        changed |= moved
        for (ctid, hn), until in list(self.busy.items()) if self.busy else ():
            if hn == report.hn and until != RUNNING and report.sent_at >= until - SETTLE:
                del self.busy[ctid, hn]  # the HN has reported since the action finished
                changed.add(ctid)
        for (ctid, hn), (epoch, _) in list(self.awaiting.items()) if self.awaiting else ():
            if hn == report.hn and report.epoch >= epoch:  # no action older than this leader's runs there now
                del self.awaiting[ctid, hn]
                self.busy.pop((ctid, hn), None)
                changed.add(ctid)
        return changed

    def await_settled(self, lost: Iterable[tuple[int, str]], epoch: int, deadline: float) -> None:
        """Actions a former leader left in flight (its intents, closed at the takeover):
        their CTs count as busy until each HN reports `epoch` settled (the agent then
        refuses anything older, and nothing older still runs), or until `deadline`
        (an HN that cannot say so: an older agent)."""
        for ctid, hn in lost:
            self.awaiting[ctid, hn] = (epoch, deadline)
            self.busy[ctid, hn] = RUNNING

    def finished(self, action: Action, result: str, now: float) -> None:
        self.busy[action.ctid, action.hn] = now + SETTLE
        if result == ActionResult.REJECTED:
            rejected = {**self.placements.rejected, (action.ctid, action.hn): now + self.settings.reject_memory}
            self.placements = Placements(self.placements.where, rejected)

    def expire(self, now: float) -> set[int]:
        changed = set()
        for key, (_, deadline) in list(self.awaiting.items()):
            if deadline <= now:
                del self.awaiting[key]
                self.busy.pop(key, None)
                changed.add(key[0])
        for (ctid, hn), until in list(self.busy.items()):
            if until <= now:
                del self.busy[ctid, hn]
                changed.add(ctid)
        return changed

    def to_fence(self, now: float) -> list[str]:
        """Silent HNs a fence command should power off now (see Failover.to_fence)."""
        return self.failover.to_fence(now, self.configured.hns, self.timers.fence_after)

    def fenced_off(self, hn: str, now: float) -> None:
        """A fence command confirmed `hn` off: it is dead from the next decision on."""
        self.failover.confirm_off(hn, now)

    def hears(self, now: float) -> dict[str, float]:
        """For the heartbeat the manager sends its voters."""
        return self.membership.hears(now)

    def warming_up(self, now: float) -> bool:
        return now - self.started_at < self.settings.stale_after and \
            not all(self.observed.known(hn, now, self.settings) for hn in self.configured.hns)

    def decide(self, now: float, only: Iterable[int] | None) -> Decision:
        """The next actions: none while warming up or without quorum (a minority
        side never acts). Marks them in flight and records new placements in
        memory (the caller persists both before executing)."""
        view = self.failover.step(now, self.configured.hns)
        self.quorum = view.quorum and not self.warming_up(now)
        if view.dead != self.observed.dead:
            only = None  # who is dead changed: every CT may move
            self.observed.dead = view.dead
        if not view.quorum or self.warming_up(now):
            return Decision(Plan(), (), view)
        p = plan(self.configured, self.observed, self.placements, now, only=only, settings=self.settings)
        busy = {ctid for ctid, _ in self.busy}
        actions = self._crash_loops(tuple(a for a in p.actions if a.ctid not in busy), now, only is None)
        was = {c: self.placements.where.get(c) for c in p.place}
        if p.place:
            self.placements = Placements({**self.placements.where, **p.place}, self.placements.rejected)
        for a in actions:
            self.busy[a.ctid, a.hn] = RUNNING
        return Decision(p, actions, view, was)

    def _crash_loops(self, actions: tuple[Action, ...], now: float, full: bool) -> tuple[Action, ...]:
        """Count the crash restarts among `actions`; drop the one that makes a crash loop."""
        if full:
            self.crashes.prune(now)
        kept = []
        for a in actions:
            if a.kind == "start" and a.ctid in self._cleared:
                self._cleared.discard(a.ctid)
            elif a.kind != "start":
                self._died.discard(a.ctid)  # stopped or destroyed by the plan: what happened before is moot
            elif a.reason.startswith("crashed") and a.ctid in self._died:
                # Only a CT that ran and died counts: retrying a start that failed
                # (a hung runtime, a timeout) is no crash of the CT.
                self._died.discard(a.ctid)
                count = self.crashes.record(a.ctid, now)
                if self.crashes.reached(a.ctid, now):
                    looped = {**self.configured.crash_looped, a.ctid: count}
                    self.configured = replace(self.configured, crash_looped=looped)
                    self.new_crash_loops.append((a.ctid, count))
                    continue
            kept.append(a)
        return tuple(kept)

    def abandon(self, actions: Iterable[Action]) -> None:
        """Actions decided but never handed to the executor (their intent could not
        be recorded, or the placement they were planned for changed meanwhile)."""
        for a in actions:
            if self.busy.get((a.ctid, a.hn)) == RUNNING:
                del self.busy[a.ctid, a.hn]


BODY_EVERY = 5.0  # s: an HN's saved report body is refreshed this often when nothing in it changed
Saved = dict[str, tuple[Any, float, Metrics]]  # HN -> (what its saved body says, when, its metrics)


def reports_to_save(pending: Mapping[str, tuple[Report, float]], saved_before: Saved, full: bool
                    ) -> tuple[list[tuple[Report, float]], list[tuple[str, float]], Saved]:
    """Which of the HNs' newest reports the daemon writes, for `status`, `hn list`
    and a restarted manager: a body when what it says about CTs changed (at once),
    or when only its metrics changed, at most every BODY_EVERY s; otherwise, once
    per full plan, only its time (no JSON to encode). Pure."""
    bodies, times, saved = [], [], {}
    for hn, (report, at) in pending.items():
        key = (report.boot_id, report.fenced, report.drained, report.cts)
        last = saved_before.get(hn)
        if last is None or last[0] != key or (full and at - last[1] >= BODY_EVERY and last[2] != report.metrics):
            bodies.append((report, at))
            saved[hn] = (key, at, report.metrics)
        elif full:
            times.append((hn, at))
    return bodies, times, saved
