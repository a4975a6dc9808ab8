"""Issue 36, item 8, the small parts of `store backup` / `store restore` (the whole
round trip on both backends: tests/integration/test_store_backup.py): how the
PostgreSQL tools are found and reached, and the refusals that change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctmanager.errors import InputError, StoreError
from ctmanager.store import archive, pgarchive


def test_without_pg_dump_the_answer_is_one_line_saying_what_to_do(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    monkeypatch.setattr("shutil.which", lambda _name: None)
    monkeypatch.setattr(pgarchive, "DEBIAN_BINS", tmp_path)
    with pytest.raises(StoreError) as err:
        pgarchive.tool("pg_dump")
    assert "apt install postgresql-client" in str(err.value) and "pg_dump --format=custom" in str(err.value)
    for version in ("13", "15"):
        (tmp_path / version / "bin").mkdir(parents=True)
        (tmp_path / version / "bin" / "pg_restore").touch()
    assert pgarchive.tool("pg_restore") == str(tmp_path / "15" / "bin" / "pg_restore")  # the newest


def test_a_url_without_a_password_leaves_libpq_s_own_lookup_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSFILE", "/home/ops/.pgpass")
    with pgarchive.libpq("postgresql://ctm@db1:5433/ctmanager?sslmode=require", "store backup") as (info, env):
        assert env["PGPASSFILE"] == "/home/ops/.pgpass"
        assert "user=ctm" in info and "port=5433" in info and "sslmode=require" in info
        assert "application_name='ctmanager store backup'" in info and "keepalives=1" in info
    with pytest.raises(StoreError, match="sslpassword") as err, \
            pgarchive.libpq("postgresql://ctm@db1/x?sslpassword=K3y", "store backup"):
        pass
    assert "K3y" not in str(err.value)


def test_restore_refuses_what_is_no_store_backup(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello")
    with pytest.raises(InputError, match="not a store backup"):
        archive.restore(tmp_path / "ctm.db", junk)
    other = tmp_path / "other.db"
    import sqlite3

    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE users (id INTEGER)")
    with pytest.raises(InputError, match="not a ctmanager store's backup"):
        archive.restore(tmp_path / "ctm.db", other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk", "other.db"]  # nothing made
