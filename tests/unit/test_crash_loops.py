"""Crash loops are capped: the counter, the manager core that counts crash
restarts and leaves a looping CT down, the store rows and what clears them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from ctmanager.dc.model import Ct, Resources
from ctmanager.errors import NotFoundError
from ctmanager.fencing.timers import FenceTimers
from ctmanager.manager.core import Core
from ctmanager.operations import inventory
from ctmanager.reconcile.crashes import CrashCounter
from ctmanager.reconcile.state import Action, Configured, Hn, Placements, Settings
from ctmanager.store import loop, open_store, queries
from ctmanager.wire.reports import CtState, Metrics, Report

G = 1 << 30
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "templates" / "dc" / "example.toml"
T0 = 1_800_000_000.0


def test_the_counter_counts_crashes_within_the_window_only() -> None:
    c = CrashCounter(limit=3, window=60)
    assert [c.record(7, t) for t in (0, 10, 20)] == [1, 2, 3]
    assert c.reached(7, 20) and not c.reached(8, 20)
    assert c.count(7, 65) == 2 and not c.reached(7, 65)  # the first crash left the window
    assert c.record(7, 66) == 3 and c.reached(7, 66)
    c.forget(7)
    assert c.count(7, 66) == 0 and c.record(7, 71) == 1
    c.record(8, 100)
    c.prune(1000)  # old entries go: memory is bounded by recent crashes
    assert c._at == {}


def test_a_limit_of_zero_never_counts() -> None:
    c = CrashCounter(limit=0, window=600)
    assert [c.record(7, t) for t in range(10)] == [0] * 10 and not c.reached(7, 10)


def ct(ctid: int = 1001) -> Ct:
    return Ct(ctid, f"ct{ctid}", 101, None, None, "prod", "10.101.4.1", "storage-101-4", "UP",
              Resources(G, 0, 10 * G, 1, 1000, 100), ())


class Rack:
    """One HN running CT 1001 (and 1002, which never crashes) under a Core."""

    def __init__(self, settings: Settings = Settings()) -> None:
        cfg = Configured({1001: ct(1001), 1002: ct(1002)}, {"hn-1": Hn("hn-1", 64 * G, 1 << 40)})
        self.core = Core(cfg, Placements({1001: "hn-1", 1002: "hn-1"}), settings, FenceTimers(), T0)
        self.seq = 0

    def report(self, now: float, opst: str) -> None:
        self.seq += 1
        cts = (CtState(1001, opst, now), CtState(1002, "UP", T0))
        self.core.heard(Report(101, "hn-1", "0123456789abcdef", self.seq, now, False,
                               Metrics(0.1, 64 * G, 60 * G, 1 << 40, 900 * G, 2), cts, False, {"manager": 0.1}), now)

    def crash(self, now: float) -> tuple[Action, ...]:
        """CT 1001 dies; the manager decides; a start it issues works within a second."""
        self.report(now, "DOWN")
        actions = self.core.decide(now, None).actions
        for a in actions:
            self.core.finished(a, "done", now + 0.5)
        self.report(now + 1, "UP" if actions else "DOWN")
        return actions


def test_the_fifth_crash_within_ten_minutes_leaves_the_ct_down() -> None:
    rack = Rack()
    rack.report(T0, "UP")
    for i in range(4):
        assert [str(a) for a in rack.crash(T0 + 60 * (i + 1))] == \
            ["start 1001 on hn-1: crashed: OPST DOWN while ADMST UP"]
    assert rack.core.new_crash_loops == []
    assert rack.crash(T0 + 300) == ()  # the fifth: not restarted
    assert rack.core.new_crash_loops == [(1001, 5)]
    assert rack.core.configured.crash_looped == {1001: 5}
    rack.report(T0 + 310, "DOWN")
    d = rack.core.decide(T0 + 310, None)  # and it stays down, with the note saying how to clear it
    assert d.actions == ()
    assert "CT 1001 left down: crash loop (5 crashes in 10 min); clear with: ctmanager ct reset 1001" in d.plan.notes


def test_a_crash_loop_not_yet_in_the_store_survives_a_reload() -> None:
    rack = Rack(Settings(crash_limit=1, crash_window=600))
    rack.report(T0, "UP")
    assert rack.crash(T0 + 10) == ()
    from_store = Configured(rack.core.configured.cts, rack.core.configured.hns)  # the row is not written yet
    rack.core.reconfigure(from_store, rack.core.placements)
    assert rack.core.configured.crash_looped == {1001: 1}
    rack.report(T0 + 12, "DOWN")
    assert rack.core.decide(T0 + 12, None).actions == ()
    rack.core.new_crash_loops.clear()  # written: the store holds it from now on
    rack.core.reconfigure(replace(from_store, crash_looped={1001: 1}), rack.core.placements)
    assert rack.core.decide(T0 + 12, None).actions == ()


def test_crashes_spread_over_more_than_the_window_are_restarted_forever() -> None:
    rack = Rack()
    rack.report(T0, "UP")
    for i in range(12):
        assert len(rack.crash(T0 + 200 * (i + 1))) == 1  # 3 crashes per 10 minutes
    assert rack.core.new_crash_loops == []


def test_a_reset_crash_loop_starts_again_and_counts_from_zero() -> None:
    rack = Rack(Settings(crash_limit=2, crash_window=600))
    rack.report(T0, "UP")
    assert len(rack.crash(T0 + 10)) == 1 and rack.crash(T0 + 20) == ()
    looped = rack.core.configured
    assert looped.crash_looped == {1001: 2}
    rack.core.new_crash_loops.clear()  # the daemon wrote it to the store
    # ops clear it: the daemon reloads the store, where the row is gone
    rack.core.reconfigure(Configured(looped.cts, looped.hns), rack.core.placements)
    rack.report(T0 + 30, "DOWN")
    assert [a.kind for a in rack.core.decide(T0 + 30, None).actions] == ["start"]
    rack.core.finished(Action("start", 1001, "hn-1", "x"), "done", T0 + 30.5)
    rack.report(T0 + 31, "UP")
    assert len(rack.crash(T0 + 40)) == 1  # its first crash since the reset: restarted




def test_crash_loops_are_stored_shown_and_cleared(inv: inventory.Inventory) -> None:
    store, dc = inv.store, inv.dc
    acme, initech = queries.find_ct(store, "acme"), queries.find_ct(store, "initech")
    with store.transaction(config=False):
        loop.mark_crash_loops(store, [(acme.ctid, 5), (initech.ctid, 6)], T0)
    assert loop.configured(store, dc, 101).crash_looped == {acme.ctid: 5, initech.ctid: 6}
    status = {r[1]: r for r in queries.status(store, T0)}
    assert status["acme"][queries.STATUS_FIELDS.index("crash_loop")] == (5, T0)
    assert status["myhost"][queries.STATUS_FIELDS.index("crash_loop")] is None
    with store.transaction():
        assert inv.reset_ct("acme") == (acme, (5, T0))
        assert inv.reset_ct("acme") == (acme, None)  # nothing left to clear: fine
        inv.set_ct("initech", admst="up")  # already UP: still "start it again"
    assert loop.configured(store, dc, 101).crash_looped == {}
    with store.transaction(config=False):
        loop.mark_crash_loops(store, [(initech.ctid, 5)], T0)
    with store.transaction():
        inv.set_ct("initech", apps=["jira"])  # other edits leave it as it is
        inv.set_ct("initech", admst="down")
    assert loop.configured(store, dc, 101).crash_looped == {initech.ctid: 5}
    with pytest.raises(NotFoundError, match="no CT 'nope'"):
        inv.reset_ct("nope")
    kinds = [r[0] for r in store.query("SELECT kind FROM events WHERE kind LIKE 'ct.%' ORDER BY id")]
    assert kinds.count("ct.crash_loop") == 3 and kinds.count("ct.reset") == 2


def test_the_journal_accepts_set_after_the_migration_and_keeps_its_rows(tmp_path: Path) -> None:
    import sqlite3

    from ctmanager.store import schema, upgrade
    from ctmanager.store.schema import statements

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    for migration in schema.MIGRATIONS[:6]:  # a store from before `set`
        for statement in statements(migration, "sqlite"):
            db.execute(statement)
    db.execute("PRAGMA user_version = 6")
    db.execute("INSERT INTO journal (id, at, kind, ctid, hn, reason, state) VALUES (41, 1.0, 'start', 1001, 'hn-1', "
               "'not running', 'done')")
    db.commit()
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO journal (at, kind, ctid, hn, reason, state) VALUES (2, 'set', 1, 'h', 'r', 'pending')")
    db.close()
    upgrade.migrate(path)  # explicit since issue 36: no command but `store migrate` migrates
    store = open_store(path)
    assert store.version == schema.VERSION
    db = sqlite3.connect(path)  # the CT the set is for (a set is journaled only for a CT of the rack)
    db.execute("INSERT INTO cts (ct_id, hostname, rack, env, ip, storage, admst, memory, swap, disk, cpus, cpuunits, "
               "cpulimit, created_at, updated_at) VALUES (1001, 'c', 101, 'prod', '10.101.4.1', 's', 'UP', 1, 0, 1, "
               "1, 1, 100, 0, 0)")
    db.commit()
    db.close()
    kept = loop.journal(store, [Action("set", 1001, "hn-1", "drift: spec changed")], 2.0, 101)
    assert [jid for _, jid in kept] == [42]  # ids go on from the kept rows
    assert [tuple(r) for r in store.query("SELECT id, kind, state FROM journal ORDER BY id")] == \
        [(41, "start", "done"), (42, "set", "pending")]
    assert store.one("SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'journal_pending'")
    assert [str(i) for i in loop.interrupted(store, 3.0, 101)] == ["set 1001 on hn-1"]  # the pending-index query still works
