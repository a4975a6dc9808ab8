"""Whether a rack has let a held tenant go: the certificate a tenant move waits
for before it seals and copies the tenant's /data away. Pure: the rack's leading
manager gives it its journal, its view of the HNs and its own clock.

What it rests on (proved, never timed against another timer):
  - a CT runs on an HN only after a `start` of it was journaled for that HN (the
    journal is written before anything is handed out), and no start of a held CT
    is journaled any more (store/loop.journal re-checks every start against the
    CT's row, under the store's write lock, after the hold committed);
  - a `stop` (or `destroy`) that its HN answered `done` ran under the CT's lock
    there: the CT was down then, and an older-epoch start that comes later is
    refused by the agent (it has seen this epoch) — a start of the same epoch
    can only have come before, if it had finished (its outcome is known) before
    the stop was journaled, or if the stop came `action_timeout` after it (an
    unknown outcome: a timeout or a lost connection);
  - an HN the leader declared dead (quorum + dead_after, or a confirmed fence) runs
    nothing: the fencing invariant failover rests on.
So: for every CT of the tenant and every HN that lists it or had a start of it,
either the HN is dead, or a stop that came after every start there is done.
Silence proves nothing (an HN that cannot be reached is waited for, however
long: the move's stop timeout rolls it back), and no report is needed at all,
so no report's age or ordering can be misread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .state import Action, JournalState

ENDED = (JournalState.DONE, JournalState.REJECTED)  # known for sure: a start that ran, or one refused before it
STOPPED = ("stop", "destroy")
REASON = "released for a tenant move"


@dataclass(frozen=True)
class Intent:
    """One journal row of the rack about a CT of the tenant."""

    id: int
    kind: str
    ctid: int
    hn: str
    state: JournalState
    epoch: int
    at: float  # journaled, on the deciding manager's clock
    finished_at: float | None = None  # on the same manager's clock (or its successor's, for an interrupted one)


@dataclass(frozen=True)
class Verdict:
    released: bool
    why: str  # what it waits for ('' when released)
    stops: tuple[Action, ...] = ()  # to hand out now (each proves its CT down on its HN once done)


def proven(starts: Iterable[Intent], stop: Intent, action_timeout: float) -> bool:
    """Whether the done `stop` came after every start in `starts` (same CT, same HN)."""
    for t in starts:
        if t.id > stop.id or t.epoch > stop.epoch or t.state == JournalState.PENDING:
            return False
        if t.epoch < stop.epoch:
            continue  # the agent saw the stop's epoch: an older start was before it, or is refused
        known = t.state in ENDED and t.finished_at is not None and t.finished_at <= stop.at
        if not known and stop.at < t.at + action_timeout:
            return False
    return True


def verdict(ctids: Iterable[int], intents: Iterable[Intent], listed: Mapping[int, Iterable[str]],
            dead: frozenset[str], busy: Iterable[int], epoch: int, now: float, action_timeout: float) -> Verdict:
    """Whether none of `ctids` runs or can run on any HN of the rack, and the stops
    that would prove it. `listed`: CTID -> HNs whose newest report lists it (UP or
    DOWN); `busy`: CTIDs with an action of this leader in flight; `epoch`: the
    leader's (its stops carry it)."""
    rows: dict[int, list[Intent]] = {}
    for i in intents:
        rows.setdefault(i.ctid, []).append(i)
    in_flight = set(busy)
    stops: list[Action] = []
    why = ""
    for ctid in sorted(set(ctids)):
        mine = rows.get(ctid, [])
        pending = next((i for i in mine if i.state == JournalState.PENDING), None)
        if ctid in in_flight or pending is not None:
            why = why or f"CT {ctid}: an action is in flight" + (f" on {pending.hn}" if pending else "")
            continue
        hns = set(listed.get(ctid, ())) | {i.hn for i in mine if i.kind == "start"}
        for hn in sorted(hns - dead):
            starts = [i for i in mine if i.hn == hn and i.kind == "start"]
            done = [i for i in mine if i.hn == hn and i.kind in STOPPED and i.state == JournalState.DONE]
            if any(proven(starts, s, action_timeout) for s in done):
                continue
            young = [t for t in starts if t.epoch == epoch and t.state not in ENDED and now < t.at + action_timeout]
            if young:  # its outcome is unknown: a stop now could overtake it
                why = why or f"CT {ctid}: the outcome of its start on {hn} is unknown until " \
                             f"{young[-1].at + action_timeout:.0f}"
                continue
            stops.append(Action("stop", ctid, hn, REASON))
            why = why or f"CT {ctid}: waiting for {hn} to stop it"
    if stops or why:
        return Verdict(False, why, tuple(stops))
    return Verdict(True, "")
