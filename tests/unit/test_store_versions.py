"""Issue 36, item 2: schema upgrades are explicit. No command but `store migrate`
changes a store's schema; every other one refuses an older store in one line
naming it, and a newer one unless its recorded compatibility floor allows this
code; `store version` says where a store stands; `store migrate --dry-run` lists
the steps and their compatibility and changes nothing; a step that would break the
managers running on the store is refused while they run."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from ctmanager.cli.main import main
from ctmanager.errors import StoreError
from ctmanager.operations import inventory
from ctmanager.store import lease, open_store, schema, upgrade
from ctmanager.store.db import Locator
from ctmanager.store.versions import COMPAT_KEY, Schema
from tests.conftest import EXAMPLE, dump, raw_sql

V = schema.VERSION


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as exc:
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(rc: int, err: str, code: int = 1) -> None:
    assert rc == code and err.count("\n") == 1 and "Traceback" not in err, (rc, err)


def set_version(locator: Locator, version: int, floor: int | None = None) -> None:
    """Past ctmanager, as a script or another version of it would."""
    if isinstance(locator, Path):
        raw_sql(locator, f"PRAGMA user_version = {version}")
    else:
        raw_sql(locator, "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    raw_sql(locator, "DELETE FROM meta WHERE key = ?", (COMPAT_KEY,))  # as a store migrated before issue 36
    if floor is not None:
        raw_sql(locator, "INSERT INTO meta (key, value) VALUES (?, ?)", (COMPAT_KEY, str(floor)))


def back_to(locator: Locator, version: int) -> None:
    """The example store as the migrations before `version` + 1 left it (v15, v16 or v17)."""
    assert version in (15, 16, 17) and V == 18, "the steps undone here are v16's, v17's and v18's"
    raw_sql(locator, "ALTER TABLE managers DROP COLUMN version")
    raw_sql(locator, "ALTER TABLE managers DROP COLUMN keys")
    if version <= 16:
        raw_sql(locator, "DROP TABLE ip_quarantine")
    if version == 15:
        raw_sql(locator, "DROP TABLE move_acks")
        for col in ("hold_version", "token", "sealed"):
            raw_sql(locator, f"ALTER TABLE moves DROP COLUMN {col}")
    set_version(locator, version)


@pytest.fixture
def example(store_path: Locator) -> Locator:
    with open_store(store_path, create=True) as store, store.transaction():
        inventory.init(store, EXAMPLE)
    return store_path


def test_every_migration_says_what_it_does_and_who_may_use_the_store_after_it() -> None:
    assert len(schema.STEPS) == len(schema.MIGRATIONS) == V
    for version, step in enumerate(schema.STEPS, 1):
        assert step.what and "\n" not in step.what
        assert 1 <= step.compatible_with <= version, step  # never newer than the step itself
    assert [schema.floor(v) for v in (0, 2, 6, 10, 15, V)] == [0, 1, 3, 10, 14, 17]


def test_a_new_store_is_made_at_this_code_s_version_with_its_floor_recorded(store_path: Locator) -> None:
    with open_store(store_path, create=True) as store:
        assert store.version == V and store.get_meta(COMPAT_KEY) == str(schema.floor(V))


def test_an_older_store_is_refused_by_every_command_but_the_store_ones_and_left_alone(
        example: Locator, capsys: pytest.CaptureFixture[str]) -> None:
    back_to(example, 16)
    before = dump(example)
    for argv in (["status"], ["status", "--json"], ["tenant", "add", "globex", "--rack", "rack-101"],
                 ["render", "/nonexistent/out"]):
        rc, out, err = run(capsys, *argv)
        one_line(rc, err)
        assert f"schema version 16 is older than this ctmanager's ({V}): run `ctmanager store migrate` (see " \
               "--dry-run)" in err and not out
    rc, out, err = run(capsys, "store", "version", "--json")
    assert rc == 0 and json.loads(out) | {"store": None} == {
        "store": None, "backend": "sqlite" if isinstance(example, Path) else "postgresql", "schema": 16,
        "code": V, "compatible_from": 16, "state": "older", "usable": False, "migrate": True}
    rc, out, err = run(capsys, "store", "version")
    assert rc == 0 and "store schema:    16" in out and "run `ctmanager store migrate`" in out
    assert dump(example) == before


def test_dry_run_lists_the_steps_and_their_compatibility_and_changes_nothing(
        example: Locator, capsys: pytest.CaptureFixture[str]) -> None:
    back_to(example, 15)
    before = dump(example)
    rc, out, err = run(capsys, "store", "migrate", "--dry-run")
    assert rc == 0 and not err, err
    assert "schema 15" in out and f"{V - 15} step(s), nothing changed (dry run)" in out
    assert "16      | tenant moves in the loop" in out and "NOT backward compatible" in out
    assert "stop every manager first" in out
    rc, out, _ = run(capsys, "store", "migrate", "--dry-run", "--json")
    got = json.loads(out)
    assert rc == 0 and got["dry_run"] and [s["version"] for s in got["steps"]] == list(range(16, V + 1))
    assert got["steps"][1] == {"version": 17, "what": schema.STEPS[16].what, "compatible_with": 17,
                               "backward_compatible": False}
    assert got["after"]["schema"] == 15 and got["compatible_from_after"] == 17 and not got["rolling"]
    assert dump(example) == before


def test_migrate_takes_each_step_in_its_own_transaction_and_again_is_nothing_to_do(
        example: Locator, capsys: pytest.CaptureFixture[str]) -> None:
    back_to(example, 15)
    rc, out, err = run(capsys, "store", "migrate")
    assert rc == 0 and f"from schema 15 to {V} ({V - 15} step(s))" in out, err
    assert [re.sub(r"\(\d+\.\ds\)", "(T)", line) for line in err.splitlines()] == [
        line for v in range(16, V + 1)
        for line in (f"migrate: schema {v - 1} -> {v}: {schema.STEPS[v - 1].what} ...", f"migrate: schema {v}: done (T)")]
    with open_store(example) as store:
        assert store.version == V and store.get_meta(COMPAT_KEY) == "17"
        store.query("SELECT hold_version, token, sealed FROM moves")  # the columns are back
        store.query("SELECT * FROM ip_quarantine")
    assert run(capsys, "status", "--json")[0] == 0
    rc, out, err = run(capsys, "store", "migrate")
    assert rc == 0 and f"is at schema {V} (this ctmanager's): nothing to migrate" in out and not err
    rc, out, _ = run(capsys, "store", "migrate", "--json")
    assert rc == 0 and json.loads(out)["steps"] == []


def test_a_failed_step_leaves_the_store_at_the_last_step_that_landed(example: Locator,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    back_to(example, 15)
    raw_sql(example, "CREATE TABLE ip_quarantine (x INTEGER)")  # step 17 cannot make its table
    rc, _, err = run(capsys, "store", "migrate")
    one_line(rc, err.splitlines()[-1] + "\n")
    assert "ip_quarantine" in err and err.splitlines()[-1].startswith("ctmanager: error:")
    with open_store(example, schema_check=False) as store:
        assert store.version == 16 and store.get_meta(COMPAT_KEY) == "16"  # step 16 landed whole, 17 not at all
    raw_sql(example, "DROP TABLE ip_quarantine")
    rc, out, _ = run(capsys, "store", "migrate")
    assert rc == 0 and f"from schema 16 to {V} ({V - 16} step(s))" in out


def test_a_step_that_would_break_running_managers_waits_until_they_stop(
        example: Locator, capsys: pytest.CaptureFixture[str]) -> None:
    """v17 is not backward compatible: the v16 managers running on the store must stop first."""
    with open_store(example) as store:
        lease.check_in(store, 101, "mgr-a", "i1", "", "standby", 0, None)
        lease.check_in(store, 101, "mgr-b", "i2", "", "stopped", 0, None)  # a stopped one does not count
    back_to(example, 16)
    before = dump(example)
    rc, out, err = run(capsys, "store", "migrate")
    one_line(rc, err)
    assert "not backward compatible" in err and "mgr-a (rack-101, standby)" in err and "mgr-b" not in err
    assert dump(example) == before
    rc, out, _ = run(capsys, "store", "migrate", "--dry-run")
    assert rc == 0 and "running now: mgr-a (rack-101, standby)" in out
    with open_store(example, schema_check=False) as store:
        lease.check_in(store, 101, "mgr-a", "i1", "", "stopped", 0, None)
    rc, out, err = run(capsys, "store", "migrate")
    assert rc == 0 and f"to {V}" in out, err


def test_a_rolling_step_goes_ahead_while_managers_run(example: Locator, capsys: pytest.CaptureFixture[str]) -> None:
    """A backward-compatible step leaves code of the store's version working, so the
    managers run on through it (v18: the managers' version column, which v17 ignores)."""
    with open_store(example) as store:
        lease.check_in(store, 101, "mgr-a", "i1", "", "standby", 0, None)
    back_to(example, 17)
    report = upgrade.migrate(example, dry_run=True)
    assert report.rolling and report.running == ()
    rc, out, _ = run(capsys, "store", "migrate", "--dry-run")  # and what it does not know: old code refuses it at start
    assert rc == 0 and "run on through it" in out and "knows no compatibility floor" in out
    assert upgrade.migrate(example).after.store == V
    with open_store(example) as store:  # what a v17 manager writes, it still can: its check-in has no version
        lease.check_in(store, 101, "mgr-a", "i1", "", "standby", 0, None)
        lease.check_in(store, 101, "mgr-b", "i2", "", "standby", 0, None, version="9.9")
        assert {c.name: c.version for c in lease.check_ins(store, 101)} == {"mgr-a": "", "mgr-b": "9.9"}


def test_a_newer_store_is_used_if_its_floor_allows_it_and_store_version_says_so(
        example: Locator, capsys: pytest.CaptureFixture[str]) -> None:
    set_version(example, V + 1, floor=V)  # what code of schema V + 1 made of an additive step
    rc, out, _ = run(capsys, "status", "--json")
    assert rc == 0 and len(json.loads(out)) == 8
    rc, out, _ = run(capsys, "tenant", "add", "globex", "--rack", "rack-101")
    assert rc == 0
    rc, out, _ = run(capsys, "store", "version", "--json")
    assert json.loads(out)["state"] == "newer" and json.loads(out)["usable"]
    rc, out, err = run(capsys, "store", "migrate")
    assert rc == 0 and "newer and backward compatible): nothing to migrate" in out
    set_version(example, V + 1, floor=V + 1)
    before = dump(example)
    rc, out, err = run(capsys, "status")
    one_line(rc, err)
    assert f"schema version {V + 1} is newer than this ctmanager's ({V}) and not backward compatible with it " \
           f"(it needs ctmanager of schema {V + 1} or newer): upgrade ctmanager" in err
    rc, out, err = run(capsys, "store", "migrate")
    one_line(rc, err)
    rc, out, _ = run(capsys, "store", "version")
    assert rc == 0 and "not backward compatible with it: upgrade ctmanager" in out
    assert dump(example) == before


def test_a_user_who_may_only_read_reads_and_may_not_migrate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ctm.db"
    with open_store(path, create=True) as store, store.transaction():
        inventory.init(store, EXAMPLE)
    monkeypatch.setenv("CTMANAGER_STORE", str(path))
    back_to(path, 16)
    before = dump(path)
    monkeypatch.setattr("ctmanager.store.backends.writable", lambda _p: False)
    rc, out, err = run(capsys, "store", "migrate")
    one_line(rc, err)
    assert "may only read the store" in err and "`ctmanager store migrate`" in err
    assert run(capsys, "store", "migrate", "--dry-run")[0] == 0
    assert run(capsys, "store", "version")[0] == 0
    rc, _, err = run(capsys, "status", "--json")
    one_line(rc, err)
    assert "is older" in err
    assert dump(path) == before


def test_store_copy_copies_a_store_of_this_schema_only(example: Locator, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    set_version(example, V + 1, floor=V)
    rc, _, err = run(capsys, "store", "copy", str(example), str(tmp_path / "copy.db"))
    one_line(rc, err)
    assert "copy it with the ctmanager of its version" in err and not (tmp_path / "copy.db").exists()
    set_version(example, V)
    rc, _, err = run(capsys, "store", "copy", str(example), str(tmp_path / "copy.db"))
    assert rc == 0, err
    with open_store(tmp_path / "copy.db") as store:  # made at this version, its own floor recorded
        assert store.version == V and store.get_meta(COMPAT_KEY) == str(schema.floor(V))


def test_a_store_migrated_before_floors_were_recorded_has_the_floor_its_steps_give() -> None:
    assert Schema(16, 17, schema.floor(16)).state == "older"
    assert Schema(18, 17, None).state == "incompatible" and not Schema(18, 17, None).usable
    assert Schema(18, 17, 17).usable and Schema(18, 17, 18).state == "incompatible"
    with pytest.raises(StoreError, match="not a ctmanager store"):
        upgrade.version(Path("/dev/null"))


def test_a_v9_sqlite_file_migrates_step_by_step(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    db = sqlite3.connect(old)
    for i in range(9):
        for statement in schema.statements(schema.MIGRATIONS[i], "sqlite"):
            db.execute(statement)
    db.execute("PRAGMA user_version = 9")
    db.commit()
    db.close()
    lines: list[str] = []
    report = upgrade.migrate(old, progress=lines.append)
    assert [s.version for s in report.steps] == list(range(10, V + 1)) and len(lines) == 2 * (V - 9)
    assert report.after.as_dict()["state"] == "current"
