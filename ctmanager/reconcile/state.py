"""The inputs and outputs of `plan()`: plain values, read-only to the planner."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from ..dc.model import Ct
from ..wire.reports import Report

ActionKind = Literal["start", "stop", "destroy", "set"]  # set: write a running CT's new spec, limits live


class JournalState(StrEnum):
    """An intent in the journal: pending until its outcome is known for sure (done:
    it ran; rejected: refused before it ran), else failed (an error, a timeout, a
    lost connection, or interrupted by a change of leader: it may still have run)."""

    PENDING = "pending"
    DONE = "done"
    REJECTED = "rejected"
    FAILED = "failed"

    @classmethod
    def of(cls, result: str) -> JournalState:
        """The journal's word for an action's result (wire/results.ActionResult)."""
        return cls.DONE if result == "done" else cls.REJECTED if result == "rejected" else cls.FAILED


@dataclass(frozen=True)
class Settings:
    stale_after: float = 3.0  # s without a report: the HN's state is unknown, nothing is done there
    reject_memory: float = 300.0  # s a rejection keeps the scheduler away from that HN for that CT
    reserve_memory: int = 256 << 20  # headroom the scheduler leaves on every HN
    idle_load: float = 0.5  # 1-min load per CPU below which an HN counts as idle (not scored)
    score_slack: float = 0.02  # HN scores this close count as equal: the one with fewer CTs wins
    crash_limit: int = 5  # crashes within crash_window that leave a CT down (crash loop); 0 = never
    crash_window: float = 600.0  # s


@dataclass(frozen=True)
class Hn:
    """A compute node as configured."""

    hostname: str
    memory: int  # SKU capacity, bytes
    disk: int
    drained: bool = False


@dataclass(frozen=True)
class Configured:
    cts: Mapping[int, Ct]
    hns: Mapping[str, Hn]
    removed: Mapping[int, bool] = field(default_factory=dict)  # CTID -> purge /data
    spec_hashes: Mapping[int, str] = field(default_factory=dict)  # CTID -> wire.spec.spec_hash of its configured spec
    crash_looped: Mapping[int, int] = field(default_factory=dict)  # CTID -> crashes counted: left down until reset
    held: frozenset[int] = frozenset()  # CTs a tenant move holds down (their admst reads DOWN): for the reason


@dataclass(frozen=True)
class Placements:
    where: Mapping[int, str]  # CTID -> the HN it should run on
    rejected: Mapping[tuple[int, str], float] = field(default_factory=dict)  # (CTID, HN) -> until


class Observed:
    """The newest report of each HN, indexed by CTID. Only `update` changes it
    (in the daemon, between plans); `plan()` only reads."""

    def __init__(self, reports: Mapping[str, Report] = {}, received_at: Mapping[str, float] = {}) -> None:
        self.reports: dict[str, Report] = {}
        self.received_at: dict[str, float] = {}
        self.where: dict[int, dict[str, str]] = {}  # CTID -> {HN: OPST}
        self.specs: dict[int, dict[str, str]] = {}  # CTID -> {HN: reported spec hash}, known hashes only
        self.dead: frozenset[str] = frozenset()  # HNs the failover logic declared dead (set by the manager)
        for hn, report in reports.items():
            self.update(report, received_at.get(hn, report.sent_at))

    def update(self, report: Report, now: float) -> set[int]:
        """Take a newer report of one HN. Returns the CTIDs whose state (OPST or
        spec hash) there changed."""
        hn = report.hn
        old = self.reports.get(hn)
        self.reports[hn] = report
        self.received_at[hn] = now
        if old is not None and old.cts == report.cts:  # the usual case: one tuple comparison, in C
            return set()
        before = {c.ctid: (c.opst, c.spec) for c in old.cts} if old else {}
        after = {c.ctid: (c.opst, c.spec) for c in report.cts}
        if before == after:
            return set()
        changed = {ctid for ctid in before.keys() | after.keys() if before.get(ctid) != after.get(ctid)}
        for ctid in changed:
            places = self.where.setdefault(ctid, {})
            state = after.get(ctid)
            if state is not None:
                places[hn] = state[0]
            else:
                places.pop(hn, None)
                if not places:
                    del self.where[ctid]
            hashes = self.specs.setdefault(ctid, {})
            if state is not None and state[1]:
                hashes[hn] = state[1]
            else:
                hashes.pop(hn, None)
                if not hashes:
                    del self.specs[ctid]
        return changed

    def spec_on(self, ctid: int, hn: str) -> str:
        """The spec hash `hn` reported for the CT; "" when unknown (an older agent)."""
        return self.specs.get(ctid, {}).get(hn, "")

    def known(self, hn: str, now: float, settings: Settings) -> bool:
        at = self.received_at.get(hn)
        return at is not None and now - at <= settings.stale_after and hn not in self.dead

    def known_at(self, now: float, settings: Settings) -> KnownAt:
        """`known` at `now` as a lazy mapping HN -> bool: a plan asks once per CT and
        HN, this answers each HN once (a one-CT plan still looks at its HNs only)."""
        return KnownAt(self, now, settings)


class KnownAt(dict[str, bool]):
    def __init__(self, observed: Observed, now: float, settings: Settings) -> None:
        super().__init__()
        self.observed, self.now, self.settings = observed, now, settings

    def __missing__(self, hn: str) -> bool:
        known = self[hn] = self.observed.known(hn, self.now, self.settings)
        return known


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    ctid: int
    hn: str
    reason: str
    purge: bool = False  # destroy only: also delete /data

    def __str__(self) -> str:
        return f"{self.kind} {self.ctid} on {self.hn}{' (purge /data)' if self.purge else ''}: {self.reason}"


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()
    place: Mapping[int, str] = field(default_factory=dict)  # new placements to record
    notes: tuple[str, ...] = ()  # strays, waits, unschedulable CTs: reported, not acted on
    alarms: tuple[str, ...] = ()  # must not happen (a CT UP on two HNs): logged as errors

    def lines(self) -> list[str]:
        return ([f"ALARM {a}" for a in self.alarms] + [str(a) for a in self.actions]
                + [f"place {c} on {hn}" for c, hn in sorted(self.place.items())] + [f"note {n}" for n in self.notes])
