"""Issue 36, item 8: the store's own backups, on both backends, through the real
CLI: a backup taken while another process writes is one committed state; the store
destroyed, the backup restored, `status` and a fresh edit work. A restore goes
into an empty store only and a refusal changes nothing.

Left to a lab test (it needs the lab rack): the managers resuming. With `lab up`
running, take `store backup`, stop the managers, destroy the store, `store
restore`, start the managers: they take their leases again, every CT stays UP and
was not restarted (its boot time on the HN unchanged), and an edit made after the
restore reaches the HNs. SQLite also wants a manager left running across the
restore (the store file replaced under it) to be seen reloading, not writing to
the unlinked file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctmanager.lab.pgserver import Cluster
from ctmanager.store import open_store
from ctmanager.store.db import Locator, is_url
from tests.conftest import EXAMPLE, ROOT, Cli, dump, fresh_pg_store, no_store, raw_sql

WRITER = """
import sys
from ctmanager.store import open_store
store = open_store(sys.argv[1])
n = 0
while True:  # two rows per transaction: a backup holds both or neither
    with store.transaction(config=False):
        store.event("probe.a", str(n))
        store.event("probe.b", str(n))
    n += 1
    if n == 50:
        print("writing", flush=True)
"""


def probes(locator: Locator) -> tuple[int, int]:
    with open_store(locator) as store:
        return tuple(int(store.one("SELECT count(*) FROM events WHERE kind = ?", (k,))[0])
                     for k in ("probe.a", "probe.b"))  # type: ignore[return-value]


def destroy(locator: Locator, cluster: Cluster | None) -> None:
    if is_url(locator):
        assert cluster is not None
        fresh_pg_store(cluster)  # the database emptied, as a dropped and re-made one
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{locator}{suffix}").unlink(missing_ok=True)
    assert no_store(locator)


def test_a_backup_taken_while_another_process_writes_restores_into_a_working_store(
        store_path: Locator, backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    cluster = request.getfixturevalue("pg_cluster") if backend == "postgresql" else None
    cli = Cli(store_path, ROOT)
    cli("init", str(EXAMPLE))
    cli("tenant", "add", "globex", "--rack", "rack-101", "--apps", "wiki")
    views = {v: json.loads(cli(*v.split(), "--json").stdout) for v in ("status", "tenant list", "route list")}

    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(store_path)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
        backup = tmp_path / "backups" / "ctm.backup"
        backup.parent.mkdir()
        p = cli("store", "backup", str(backup))
        assert "backed up" in p.stdout and "backup: " in p.stderr, p.stderr
        time.sleep(0.2)  # it writes on after the backup
    finally:
        writer.terminate()
        writer.wait(timeout=10)
    assert os.stat(backup).st_mode & 0o777 == 0o600
    assert not list(backup.parent.glob(".*")), "no temp file left"
    total = probes(store_path)

    destroy(store_path, cluster)
    p = cli("status", check=False)
    assert p.returncode == 1 and p.stderr.count("\n") == 1
    got = json.loads(cli("store", "restore", str(backup), "--json").stdout)
    assert got["schema"] == got["code"] and got["state"] == "current" and got["bytes"] == backup.stat().st_size

    a, b = probes(store_path)
    assert a == b and 50 <= a < total[0], (a, b, total)  # one committed state, taken mid-way
    assert {v: json.loads(cli(*v.split(), "--json").stdout) for v in views} == views
    new = json.loads(cli("ct", "add", "extra-1", "--tenant", "globex", "--rack", "rack-101", "--json").stdout)
    assert new["ctid"] > max(r["ctid"] for r in views["status"])
    cli("tenant", "add", "hooli", "--rack", "rack-101")  # ids go on after the restored ones (events, journal)
    assert len(json.loads(cli("status", "--json").stdout)) == len(views["status"]) + 2  # extra-1, hooli's core


def test_a_restore_into_a_store_that_holds_anything_is_refused_and_changes_nothing(
        store_path: Locator, backend: str, tmp_path: Path) -> None:
    cli = Cli(store_path, ROOT)
    cli("init", str(EXAMPLE))
    backup = tmp_path / "ctm.backup"
    cli("store", "backup", str(backup))
    before = dump(store_path)
    p = cli("store", "restore", str(backup), check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "empty" in p.stderr, p.stderr
    assert dump(store_path) == before
    # the other backend's backup: told how, nothing done
    other = tmp_path / "other.db"
    Cli(other, ROOT)("init", str(EXAMPLE))
    if backend == "sqlite":
        destroy(store_path, None)
        (tmp_path / "fake.pgdump").write_bytes(b"PGDMP" + b"\0" * 100)
        p = cli("store", "restore", str(tmp_path / "fake.pgdump"), check=False)
        assert p.returncode == 2 and "postgresql://" in p.stderr and no_store(store_path), p.stderr
    else:
        raw_sql(store_path, "DROP TABLE meta CASCADE")  # another program's table stays: not empty
        p = cli("store", "restore", str(backup), check=False)
        assert p.returncode == 2 and "holds" in p.stderr
        p = cli("store", "restore", str(other), check=False)
        assert p.returncode == 2 and "store copy" in p.stderr, p.stderr
    for bad in (tmp_path / "missing", tmp_path):
        p = cli("store", "restore", str(bad), check=False)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr


def test_a_backup_never_overwrites_the_store_nor_writes_through_a_link(sqlite_path: Path, tmp_path: Path) -> None:
    cli = Cli(sqlite_path, ROOT)
    cli("init", str(EXAMPLE))
    before = dump(sqlite_path)
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (tmp_path / "link.db").symlink_to(target)
    for file in (sqlite_path, tmp_path / "link.db", tmp_path / "no-folder" / "b.db", tmp_path):
        p = cli("store", "backup", str(file), check=False)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, (file, p.stderr)
    assert dump(sqlite_path) == before and target.read_text() == "keep"
    backup = tmp_path / "b.db"
    backup.write_text("an earlier backup")
    cli("store", "backup", str(backup))  # replaced whole
    assert backup.read_bytes().startswith(b"SQLite format 3\0") and backup.stat().st_mode & 0o777 == 0o600


def test_an_older_store_is_backed_up_before_its_migration_and_restores_as_it_was(
        sqlite_path: Path, tmp_path: Path) -> None:
    cli = Cli(sqlite_path, ROOT)
    cli("init", str(EXAMPLE))
    for column in ("version", "keys"):  # undo v18 and v17: the store an older ctmanager left
        raw_sql(sqlite_path, f"ALTER TABLE managers DROP COLUMN {column}")
    raw_sql(sqlite_path, "DROP TABLE ip_quarantine")
    raw_sql(sqlite_path, "PRAGMA user_version = 16")
    backup = tmp_path / "before-migrate.db"
    got = json.loads(cli("store", "backup", str(backup), "--json").stdout)
    assert got["schema"] == 16
    destroy(sqlite_path, None)
    p = cli("store", "restore", str(backup))
    assert "older than this ctmanager: run `ctmanager store migrate`" in p.stdout
    cli("store", "migrate")
    assert len(json.loads(cli("status", "--json").stdout)) == 8


def test_pg_dump_gets_no_password_on_its_command_line(pg_cluster: Cluster, tmp_path: Path) -> None:
    """The cluster trusts local users, so any password works: the backup and the
    restore run, and the password is in no message and no tool's argv."""
    secret = "S3cr:t\\pw"
    url = pg_cluster.create_database("ctm_pw_backup").replace("postgresql:///", "postgresql://postgres:"
                                                               "S3cr%3At%5Cpw@/", 1)
    cli = Cli(url, ROOT)
    cli("init", str(EXAMPLE))
    from ctmanager.store import pgarchive

    with pgarchive.libpq(url, "store backup") as (conninfo, env):
        passfile = Path(env["PGPASSFILE"])
        assert secret not in conninfo and "password" not in conninfo and "connect_timeout" in conninfo
        assert passfile.read_text() == "*:*:*:*:S3cr\\:t\\\\pw\n" and passfile.stat().st_mode & 0o777 == 0o600
    assert not passfile.exists()
    backup = tmp_path / "pw.backup"
    outs = [cli("store", "backup", str(backup))]
    raw_sql(url, "DROP SCHEMA public CASCADE")
    raw_sql(url, "CREATE SCHEMA public")
    outs.append(cli("store", "restore", str(backup)))
    for p in outs:
        assert "S3cr" not in p.stdout + p.stderr
    assert len(json.loads(cli("status", "--json").stdout)) == 8
