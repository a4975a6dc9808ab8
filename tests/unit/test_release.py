"""A rack leader's release certificate for a held tenant (reconcile/release.py):
from its journal and its view of the HNs, whether none of the tenant's CTs runs
or can run there, and the stops that would prove it. Pure: each row is a journal
as the leader reads it. (A), (C), (G) are the races the simulator reproduced
against the timed rule it replaced (tests/scenarios/moves). Then what it rests
on in the store: the journal's re-check of every start (store/loop.journal),
and the certificate's row (store/moveacks.py), on each backend."""

from __future__ import annotations

from typing import Any

import pytest

from ctmanager.operations import inventory
from ctmanager.reconcile.release import REASON, Intent, proven, verdict
from ctmanager.reconcile.state import Action, Settings
from ctmanager.store import loop as persist
from ctmanager.store import moveacks, moves, queries
from tests.unit.test_moves import change, started, two_racks

EPOCH = 4  # the certifying leader's
TIMEOUT = 60.0  # action_timeout
NOW = 1000.0
H1, H2 = "hn-101-1", "hn-101-2"


def start(id: int, hn: str = H1, state: str = "done", epoch: int = EPOCH, at: float = 500.0,
          finished: float | None = None, ctid: int = 1001) -> Intent:
    return Intent(id, "start", ctid, hn, state, epoch, at,
                  None if state == "pending" else (at + 1 if finished is None else finished))


def stop(id: int, hn: str = H1, state: str = "done", epoch: int = EPOCH, at: float = 600.0, kind: str = "stop",
         ctid: int = 1001) -> Intent:
    return Intent(id, kind, ctid, hn, state, epoch, at, None if state == "pending" else at + 1)


# (case, intents, listed: CTID -> HNs whose newest report lists it, dead HNs, busy CTIDs,
#  released, stops asked for (CTID, HN), what it says it waits for)
ROWS: list[tuple[str, list[Intent], dict[int, set[str]], set[str], set[int], bool, list[tuple[int, str]], str]] = [
    ("nothing anywhere", [], {}, set(), set(), True, [], ""),
    ("A: a start journaled before the hold, still pending",
     [start(1, state="pending", at=NOW - 1)], {}, set(), set(), False, [], "in flight on hn-101-1"),
    ("an action of this leader in flight", [], {1001: {H1}}, set(), {1001}, False, [], "in flight"),
    ("C: its report says DOWN, but a start was done there and no stop since",
     [start(1)], {1001: {H1}}, set(), set(), False, [(1001, H1)], "waiting for hn-101-1 to stop it"),
    ("C: the report that would list it was lost", [start(1)], {}, set(), set(), False, [(1001, H1)], "hn-101-1"),
    ("C: ... until that stop is done", [start(1), stop(2)], {1001: {H1}}, set(), set(), True, [], ""),
    ("G: a silent HN (not dead) lists it", [], {1001: {H2}}, set(), set(), False, [(1001, H2)], "hn-101-2"),
    ("G: ... a stop asked there, not done yet", [stop(2, H2, state="pending")], {1001: {H2}}, set(), set(), False,
     [], "in flight on hn-101-2"),
    ("G: ... a stop there that failed (unreachable)", [stop(2, H2, state="failed")], {1001: {H2}}, set(), set(),
     False, [(1001, H2)], "hn-101-2"),
    ("G: ... its stop is done", [stop(2, H2)], {1001: {H2}}, set(), set(), True, [], ""),
    ("a dead HN runs nothing: no stop", [start(1, H2)], {1001: {H2}}, {H2}, set(), True, [], ""),
    ("a destroy done proves too", [start(1), stop(2, kind="destroy")], {1001: {H1}}, set(), set(), True, [], ""),
    ("a stop of a newer epoch proves against an older interrupted start",
     [start(1, state="failed", epoch=3, at=NOW - 5), stop(2, at=NOW - 4)], {}, set(), set(), True, [], ""),
    ("a same-epoch start of unknown outcome, younger than action_timeout: wait",
     [start(1, state="failed", at=NOW - 10)], {1001: {H1}}, set(), set(), False, [], "unknown until 1050"),
    ("... older than action_timeout: a stop", [start(1, state="failed", at=NOW - 61)], {1001: {H1}}, set(), set(),
     False, [(1001, H1)], "hn-101-1"),
    ("... a stop journaled within action_timeout of it proves nothing",
     [start(1, state="failed", at=NOW - 100), stop(2, at=NOW - 99)], {}, set(), set(), False, [(1001, H1)], ""),
    ("... one journaled after action_timeout proves",
     [start(1, state="failed", at=NOW - 100), stop(2, at=NOW - 30)], {}, set(), set(), True, [], ""),
    ("a same-epoch start done before the stop was journaled: proven at once",
     [start(1, at=NOW - 3, finished=NOW - 2), stop(2, at=NOW - 1)], {}, set(), set(), True, [], ""),
    ("a rejected start (it never ran) that ended before the stop",
     [start(1, state="rejected", at=NOW - 3, finished=NOW - 2), stop(2, at=NOW - 1)], {}, set(), set(), True, [], ""),
    ("a done stop that came before a start does not prove", [stop(1, at=400.0), start(2, at=500.0)], {1001: {H1}},
     set(), set(), False, [(1001, H1)], "hn-101-1"),
    ("a stop of an older epoch does not prove a newer start",
     [start(1, epoch=EPOCH), stop(2, epoch=EPOCH - 1)], {}, set(), set(), False, [(1001, H1)], ""),
    ("a stop on another HN does not prove", [start(1, H1), stop(2, H2)], {1001: {H1, H2}}, set(), set(), False,
     [(1001, H1)], "hn-101-1"),
    ("each CT on each HN", [start(1, H1), stop(2, H1), start(3, H2, ctid=1002)], {1002: {H1, H2}}, set(), set(),
     False, [(1002, H1), (1002, H2)], "CT 1002"),
]


@pytest.mark.parametrize("case,intents,listed,dead,busy,released,stops,why", ROWS, ids=[r[0] for r in ROWS])
def test_the_verdict(case: str, intents: list[Intent], listed: dict[int, set[str]], dead: set[str], busy: set[int],
                     released: bool, stops: list[tuple[int, str]], why: str) -> None:
    v = verdict([1001, 1002], intents, listed, frozenset(dead), busy, EPOCH, NOW, TIMEOUT)
    assert v.released is released
    assert [(a.kind, a.ctid, a.hn, a.reason) for a in v.stops] == [("stop", c, hn, REASON) for c, hn in stops]
    assert why in v.why and (v.why == "") is released


def test_released_only_once_the_stops_it_asked_for_are_done() -> None:
    """The leader's loop: ask, journal, hand out, and the stop's outcome comes back."""
    journal = [start(1, at=NOW - 200)]
    listed: dict[int, set[str]] = {1001: {H1}}
    seen: list[Any] = []
    for now in (NOW, NOW + 1, NOW + 2):
        v = verdict([1001], journal, listed, frozenset(), set(), EPOCH, now, TIMEOUT)
        seen.append((v.released, [a.hn for a in v.stops]))
        for a in v.stops:  # journaled pending, then done by the next look
            journal.append(stop(len(journal) + 1, a.hn, state="pending", at=now))
        journal = [replace_state(i, "done") if i.state == "pending" and i.at < now else i for i in journal]
    assert seen == [(False, [H1]), (False, []), (True, [])]


def replace_state(i: Intent, state: str) -> Intent:
    return Intent(i.id, i.kind, i.ctid, i.hn, state, i.epoch, i.at, i.at + 0.5)


@pytest.mark.parametrize("starts,stop_,ok", [
    ([], stop(5), True),
    ([start(1), start(2, state="failed", epoch=3)], stop(5), True),
    ([start(6)], stop(5), False),  # journaled after the stop
    ([start(1, epoch=EPOCH + 1)], stop(5), False),  # a newer leader's start
    ([start(1, state="pending")], stop(5), False),
    ([start(1, state="failed", at=590.0)], stop(5, at=600.0), False),  # unknown outcome, 10 s before the stop
])
def test_proven(starts: list[Intent], stop_: Intent, ok: bool) -> None:
    assert proven(starts, stop_, TIMEOUT) is ok


# ---- in the store --------------------------------------------------------------------
@pytest.fixture
def racks(inv: inventory.Inventory) -> inventory.Inventory:
    return two_racks(inv)


def test_the_journal_drops_a_start_or_set_that_no_longer_holds(racks: inventory.Inventory) -> None:
    """Rack-101's plan was made on a configuration read before these commits."""
    store, ids = racks.store, {}
    for name in ("myhost", "acme", "initech", "mailstore-102-1"):
        ids[name] = queries.find_ct(store, name).ctid
    change(racks, moves.update, store, started(racks), 1.0, "", hold=True)  # myhost: held by its move
    change(racks, racks.set_ct, "acme", admst="DOWN")
    with store.transaction(config=False):
        persist.mark_crash_loops(store, [(ids["initech"], 5)], 1.0)
    rows = [  # (CT, action, kept)
        ("myhost", "start", False), ("myhost", "stop", True), ("myhost", "set", True),
        ("acme", "start", False), ("acme", "set", True), ("acme", "stop", True),
        ("initech", "start", False), ("initech", "stop", True),
        ("mailstore-102-1", "start", False), ("mailstore-102-1", "set", False), ("mailstore-102-1", "stop", True),
    ]
    actions = [Action(kind, ids[name], "hn-101-1", "test") for name, kind, _ in rows]
    actions.append(Action("start", 99999, "hn-101-1", "a CT removed meanwhile"))
    with store.transaction(config=False):
        kept = persist.journal(store, actions, 2.0, 101, epoch=4)
    assert [(a.ctid, a.kind) for a, _ in kept] == [(ids[n], k) for n, k, ok in rows if ok]
    written = [(r[0], int(r[1]), r[2], int(r[3])) for r in store.query(
        "SELECT id, ct_id, kind, epoch FROM journal WHERE rack = 101 ORDER BY id")]
    assert written == [(jid, a.ctid, a.kind, 4) for a, jid in kept]  # what is dropped is never written
    with store.transaction(config=False):  # its own rack's, ADMST UP, not held, no crash loop: kept
        assert [a.ctid for a, _ in persist.journal(store, [Action("start", ids["mailstore-102-1"], "hn-102-1",
                                                                  "placed")], 3.0, 102)] == [ids["mailstore-102-1"]]


def test_a_start_journaled_before_the_hold_is_waited_for_and_none_comes_after(racks: inventory.Inventory) -> None:
    """(A) on the store: the certificate's verdict reads rack-101's journal."""
    store = racks.store
    ctid = queries.find_ct(store, "myhost").ctid
    m = started(racks)
    with store.transaction(config=False):
        ((early, jid),) = persist.journal(store, [Action("start", ctid, "hn-101-2", "crashed")], 10.0, 101, 4)
    m = change(racks, moves.update, store, m, 11.0, "", hold=True)

    def look(now: float) -> tuple[bool, list[str]]:
        v = verdict([ctid], moveacks.intents(store, [ctid], 101), {}, frozenset(), set(), 4, now, TIMEOUT)
        return v.released, [a.hn for a in v.stops]

    assert look(12.0) == (False, [])  # in flight: wait for it
    with store.transaction(config=False):
        assert persist.journal(store, [Action("start", ctid, "hn-101-1", "placed")], 12.0, 101, 4) == []
        persist.finish(store, jid, early, "done", "started", 13.0, Settings(), 101)
    assert look(14.0) == (False, ["hn-101-2"])  # it ran: stop it there
    with store.transaction(config=False):
        ((a, sid),) = persist.journal(store, [Action("stop", ctid, "hn-101-2", REASON)], 14.0, 101, 4)
        persist.finish(store, sid, a, "done", "stopped", 15.0, Settings(), 101)
    assert look(16.0) == (True, [])


CERTIFY = [  # (the move's row, rack certifying, written)
    ({}, 101, False),  # not holding (still copying)
    ({"hold": True}, 101, True),
    ({"hold": True}, 102, False),  # its CTs are configured in rack-101
    ({"hold": True, "flipped": True}, 102, True),  # a rollback after the flip: held in the destination
    ({"hold": True, "flipped": True}, 101, False),
    ({"hold": True, "phase": "rolled-back", "finished_at": 20.0}, 101, False),  # not open
]


@pytest.mark.parametrize("row,rack,written", CERTIFY, ids=[f"{r} by rack-{k}" for r, k, _ in CERTIFY])
def test_a_certificate_is_written_only_for_an_open_held_move_in_that_rack(
        racks: inventory.Inventory, row: dict[str, Any], rack: int, written: bool) -> None:
    store = racks.store
    m = change(racks, moves.update, store, started(racks), 10.0, "", **row)
    with store.transaction(config=False):
        assert moveacks.certify(store, m, rack, 4, store.config_version(), True, "", 21.0) is written
    assert (moveacks.release_of(store, m.id, rack) is not None) is written
    assert [x.id for x in moveacks.held_in(store, rack)] == ([m.id] if written else [])


def test_a_release_is_never_taken_back_until_a_new_hold_forgets_it(racks: inventory.Inventory) -> None:
    store = racks.store
    m = change(racks, moves.update, store, started(racks), 10.0, "", hold=True)

    def certify(epoch: int, released: bool, why: str = "") -> bool:
        with store.transaction(config=False):
            return moveacks.certify(store, m, 101, epoch, store.config_version(), released, why, 11.0)

    assert certify(4, False, "CT 1: waiting for hn-101-1 to stop it")
    assert certify(4, False, "CT 1: an action is in flight")  # not released yet: each look rewrites it
    assert moveacks.release_of(store, m.id, 101).detail == "CT 1: an action is in flight"
    assert certify(5, True)
    got = moveacks.release_of(store, m.id, 101)
    assert not certify(6, False, "a later leader's doubt") and not certify(6, True)
    assert moveacks.release_of(store, m.id, 101) == got and got is not None and got.released and got.epoch == 5
    with store.transaction(config=False):
        moveacks.forget(store, m.id, 101)
    assert moveacks.release_of(store, m.id, 101) is None and certify(6, False, "x")
