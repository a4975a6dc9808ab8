"""The two backends: one schema whichever way a store got there, a newer schema
refused on both, the same answers to the same statements (ordering included),
write serialisation, and store errors as one line."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ctmanager.errors import StoreError
from ctmanager.store import open_store, queries, schema, upgrade
from ctmanager.store.db import Locator
from tests.conftest import raw_sql


def _sqlite_schema(path: Path) -> dict[str, object]:
    """Tables (columns: name, affinity, not null, default, pk; foreign keys) and indexes."""
    def affinity(decl: str) -> str:  # SQLite's own rules (3.1 "Determination Of Column Affinity")
        d = decl.upper()
        return ("INTEGER" if "INT" in d else "TEXT" if "CHAR" in d or "CLOB" in d or "TEXT" in d else
                "REAL" if "REAL" in d or "FLOA" in d or "DOUB" in d else "NUMERIC")
    con = sqlite3.connect(path)
    try:
        out: dict[str, object] = {}
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
            cols = [(c[1], affinity(c[2]), c[3], c[4], c[5]) for c in con.execute(f'PRAGMA table_info("{table}")')]
            fks = sorted(tuple(f[2:5]) for f in con.execute(f'PRAGMA foreign_key_list("{table}")'))
            idx = sorted((i[1], i[2], i[4]) for i in con.execute(f'PRAGMA index_list("{table}")'))
            out[table] = (cols, fks, idx)
        return out
    finally:
        con.close()


def test_an_old_sqlite_store_migrates_to_the_schema_a_new_one_is_made_with(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    db = sqlite3.connect(old)
    for i in range(schema.BASELINE_VERSION - 1):  # a store of v9: every migration then, in order
        for statement in schema.statements(schema.MIGRATIONS[i], "sqlite"):
            db.execute(statement)
    db.execute(f"PRAGMA user_version = {schema.BASELINE_VERSION - 1}")
    db.execute("INSERT INTO crash_loops (ctid, since, count) VALUES (1001, 1.5, 3)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=f"version {schema.BASELINE_VERSION - 1} is older .* store migrate"):
        open_store(old)  # never migrated at open (issue 36)
    report = upgrade.migrate(old)
    assert (report.before.store, report.after.store) == (schema.BASELINE_VERSION - 1, schema.VERSION)
    with open_store(old) as store:
        assert store.version == schema.VERSION
        assert [tuple(r) for r in store.query("SELECT ct_id, since, count FROM crash_loops")] == [(1001, 1.5, 3)]
    with open_store(tmp_path / "new.db", create=True) as store:
        assert store.version == schema.VERSION
    assert _sqlite_schema(old) == _sqlite_schema(tmp_path / "new.db")


def test_a_newer_schema_is_used_only_if_its_recorded_floor_allows_this_code(store_path: Locator,
                                                                           backend: str) -> None:
    """Issue 36: a store of a newer schema is refused unless the newer code that
    migrated it recorded that code of this schema may still use it; left alone."""
    from ctmanager.store.versions import COMPAT_KEY
    from tests.conftest import dump

    open_store(store_path, create=True).close()
    newer = schema.VERSION + 1

    def at(version: int, floor: int | None) -> None:
        if backend == "sqlite":
            with sqlite3.connect(str(store_path)) as db:
                db.execute(f"PRAGMA user_version = {version}")
        else:
            raw_sql(store_path, "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
        raw_sql(store_path, "DELETE FROM meta WHERE key = ?", (COMPAT_KEY,))
        if floor is not None:
            raw_sql(store_path, "INSERT INTO meta (key, value) VALUES (?, ?)", (COMPAT_KEY, str(floor)))

    for floor in (newer, None):  # not backward compatible, or nothing recorded: refused
        at(newer, floor)
        before = dump(store_path)
        with pytest.raises(StoreError, match=f"schema version {newer} is newer than this ctmanager's .*upgrade") as err:
            open_store(store_path)
        assert "\n" not in str(err.value)
        assert dump(store_path) == before
    at(newer, schema.VERSION)  # backward compatible with this code: used
    with open_store(store_path) as store:
        assert store.version == newer and store.get_meta(COMPAT_KEY) == str(schema.VERSION)


def test_text_sorts_bytewise_and_epoch_seconds_keep_their_digits(store_path: Locator) -> None:
    names = ["b", "B", "a-1", "a_1", "a1", "A", "ä", "a 1", "10", "9"]
    at = 1_795_000_000.123456  # PostgreSQL's REAL (float4) would round this to minutes
    with open_store(store_path, create=True) as store:
        with store.transaction():
            for n in names:
                store.execute("INSERT INTO dns_conflicts (name, rdtype, detail, at) VALUES (?, 'A', '', ?)", (n, at))
        got = [r[0] for r in store.query("SELECT name FROM dns_conflicts ORDER BY name")]
        assert got == sorted(names, key=lambda s: s.encode())
        assert {r[0] for r in store.query("SELECT at FROM dns_conflicts")} == {at}


def test_a_row_reads_by_position_and_by_name_and_errors_are_one_line(store_path: Locator) -> None:
    with open_store(store_path, create=True) as store:
        row = store.one("SELECT key, value FROM meta WHERE key = 'config_version' UNION ALL SELECT 'k', 'v' LIMIT 1")
        assert row[0] == row["key"] and row[1] == row["value"] and list(row.keys()) == ["key", "value"]
        with pytest.raises(StoreError) as err:
            store.execute("SELECT nope FROM meta")
        assert "\n" not in str(err.value) and "nope" in str(err.value)
        with store.transaction(), pytest.raises(StoreError, match="nested"), store.transaction():
            pass


def test_a_postgresql_url_s_password_is_never_in_a_message(pg_cluster) -> None:
    url = pg_cluster.url("no_such_db").replace("user=postgres", "user=postgres&password=s3cret")
    with pytest.raises(StoreError) as err:
        open_store(url)
    assert "s3cret" not in str(err.value) and "cannot connect" in str(err.value)
    bad = "postgresql://alice:s3cret@127.0.0.1:1/x?connect_timeout=1"
    with pytest.raises(StoreError) as err:
        open_store(bad)
    assert "s3cret" not in str(err.value) and "alice:***@" in str(err.value)


def test_a_connection_the_server_dropped_is_one_error_then_made_again(pg_cluster) -> None:
    from tests.conftest import fresh_pg_store

    url = fresh_pg_store(pg_cluster)
    with open_store(url, create=True) as store:
        pid = store.one("SELECT pg_backend_pid()")[0]
        raw_sql(url, "SELECT pg_terminate_backend(?)", (pid,))  # a restart or a failover, as this client sees it
        with pytest.raises(StoreError, match="cannot reach the store"):
            store.get_meta("schema_version")
        assert store.get_meta("schema_version") == str(schema.VERSION)  # the next statement reconnects
        with store.transaction():
            store.set_meta("probe", "1")
        assert store.one("SELECT pg_backend_pid()")[0] != pid


def test_report_ages_are_on_the_store_s_clock_not_the_manager_s(inv) -> None:
    """A manager whose clock is an hour behind the CLI's machine: its HNs' reports
    are still fresh in `status` and `hn list` (the store stamps when it took them)."""
    from ctmanager.fencing.quorum import MANAGER
    from ctmanager.store import loop
    from ctmanager.wire.reports import CtState, Metrics, Report

    store = inv.store
    acme = queries.find_ct(store, "acme")
    manager_now = store.now() - 3600.0
    report = Report(101, "hn-101-1", "0123456789abcdef", 1, manager_now, False,
                    Metrics(0.1, 1 << 30, 1 << 30, 1 << 40, 1 << 40, 0), (CtState(acme.ctid, "UP", manager_now),),
                    False, {MANAGER: 0.1})
    with store.transaction(config=False):
        loop.save_reports(store, [(report, manager_now)])
        loop.save_observed(store, [(acme.ctid, "hn-101-1", "UP", manager_now)], [], {}, 101)
    row = next(r for r in queries.status(store) if r[0] == acme.ctid)
    assert row[6] == "UP" and 0 <= row[8] < 5, row  # OPST, report age
    assert 0 <= store.now() - queries.hn_reports(store)["hn-101-1"][0] < 5
