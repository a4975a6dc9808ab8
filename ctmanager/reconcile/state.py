"""The inputs and outputs of `plan()`: plain values, read-only to the planner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

from ..dc.model import Ct
from ..wire.reports import Report

ActionKind = Literal["start", "stop", "destroy"]


@dataclass(frozen=True)
class Settings:
    stale_after: float = 3.0  # s without a report: the HN's state is unknown, nothing is done there
    reject_memory: float = 300.0  # s a rejection keeps the scheduler away from that HN for that CT
    reserve_memory: int = 256 << 20  # headroom the scheduler leaves on every HN
    idle_load: float = 0.5  # 1-min load per CPU below which an HN counts as idle (not scored)
    score_slack: float = 0.02  # HN scores this close count as equal: the one with fewer CTs wins


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
        self.dead: frozenset[str] = frozenset()  # HNs the failover logic declared dead (set by the manager)
        for hn, report in reports.items():
            self.update(report, received_at.get(hn, report.sent_at))

    def update(self, report: Report, now: float) -> set[int]:
        """Take a newer report of one HN. Returns the CTIDs whose state there changed."""
        old = self.reports.get(report.hn)
        before = {c.ctid: c.opst for c in old.cts} if old else {}
        after = {c.ctid: c.opst for c in report.cts}
        self.reports[report.hn] = report
        self.received_at[report.hn] = now
        if before == after:  # the usual case: one dict comparison, in C
            return set()
        changed = {ctid for ctid in before.keys() | after.keys() if before.get(ctid) != after.get(ctid)}
        for ctid in changed:
            places = self.where.setdefault(ctid, {})
            if ctid in after:
                places[report.hn] = after[ctid]
            else:
                places.pop(report.hn, None)
                if not places:
                    del self.where[ctid]
        return changed

    def known(self, hn: str, now: float, settings: Settings) -> bool:
        at = self.received_at.get(hn)
        return at is not None and now - at <= settings.stale_after and hn not in self.dead


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
