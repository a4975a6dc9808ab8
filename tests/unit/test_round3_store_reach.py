"""Issue 35, hardening round 3: store locators (one check, one redaction), init
beside another program's tables, read-only opens; reaching a CT in any rack from
one rack's manager config; the small refusals; errors under --json; group help."""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from pathlib import Path

import pytest

from ctmanager.cli.main import main
from ctmanager.errors import InputError, StoreError
from ctmanager.manager import config as mconfig
from ctmanager.manager import reach
from ctmanager.operations import inventory
from ctmanager.store import loop, open_store, queries, schema
from ctmanager.store.db import parse_locator, redact, scrub
from ctmanager.wire.reports import CtState, Metrics, Report
from tests.conftest import EXAMPLE, agent_toml, dump, manager_toml, rack_key, raw_sql
from tests.unit.test_rack_scope import two_racks

SECRET = "S3cr3tPW"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as exc:  # --help, argparse usage errors
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_refusal(rc: int, err: str, code: int = 2) -> None:
    assert rc == code and err.count("\n") == 1 and "Traceback" not in err, (rc, err)


# ---- 9. store locators --------------------------------------------------------
BAD_LOCATORS = [
    f"PostgreSQL://u:{SECRET}@h/x", f"postgresq://u:{SECRET}@h/x", f"mysql://u:{SECRET}@h/x",
    f"POSTGRES://u:{SECRET}@h/x", f"sqlite://u:{SECRET}@h/x", f" postgresql://u:{SECRET}@h/x",
    f"postgresql://u:{SECRET}@h/x ", f"postgresql://u:{SECRET}@h/x\n", "/tmp/a\tb", "", "   ",
    f"host=h password={SECRET} dbname=x",
]


@pytest.mark.parametrize("text", BAD_LOCATORS)
def test_a_locator_with_another_scheme_or_stray_characters_is_refused_without_its_password(
        text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as caught:
        parse_locator(text)
    assert SECRET not in str(caught.value)
    for argv in (["--store", text, "status"], ["store", "copy", str(tmp_path / "none.db"), text],
                 ["--store", text, "init", str(EXAMPLE)]):
        rc, out, err = run(capsys, *argv)
        one_line_refusal(rc, err)
        assert SECRET not in out + err
    assert list(tmp_path.iterdir()) == []  # nothing made: no SQLite file or folder named after the URL


def test_the_environment_variable_is_checked_the_same_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CTMANAGER_STORE", f"PostgreSQL://u:{SECRET}@h/x")
    rc, out, err = run(capsys, "status")
    one_line_refusal(rc, err)
    assert "$CTMANAGER_STORE" in err and SECRET not in err and list(tmp_path.iterdir()) == []


def test_supported_locators_pass() -> None:
    assert parse_locator("postgresql://u:pw@h/x") == "postgresql://u:pw@h/x"
    assert parse_locator("postgres://h/x") == "postgres://h/x"
    assert parse_locator("/var/lib/ctmanager/ctmanager.db") == Path("/var/lib/ctmanager/ctmanager.db")
    assert parse_locator("relative/dc.db") == Path("relative/dc.db")


def test_redaction_hides_every_form_of_password() -> None:
    for url in (f"postgresql://u:{SECRET}@h/x", f"postgresql://u:a/{SECRET}@b@h/x",
                f"postgresql://u@h/x?sslpassword={SECRET}&x=1", f"postgresql://h/x?password={SECRET}",
                f"host=h password={SECRET} dbname=x"):
        assert SECRET not in redact(url), url
        assert SECRET not in scrub(f"FATAL: cannot use {url}", url), url
    assert redact("postgresql://u:pw@db1:5432/ctm") == "postgresql://u:***@db1:5432/ctm"


def test_init_refuses_a_database_holding_another_program_s_tables(store_path, capsys) -> None:
    raw_sql(store_path, "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    raw_sql(store_path, "INSERT INTO users (id, name) VALUES (1, 'alice')")
    before = dump(store_path)
    rc, out, err = run(capsys, "--store", str(store_path), "init", str(EXAMPLE))
    one_line_refusal(rc, err)
    assert "another program" in err and "users" in err and not out
    assert dump(store_path) == before  # not one of our tables added


def test_store_copy_refuses_a_destination_of_another_program(tmp_path: Path, capsys) -> None:
    src, dst = tmp_path / "dc.db", tmp_path / "other.db"
    assert run(capsys, "--store", str(src), "init", str(EXAMPLE))[0] == 0
    with sqlite3.connect(dst) as db:
        db.execute("CREATE TABLE users (id INTEGER)")
    rc, _out, err = run(capsys, "store", "copy", str(src), str(dst))
    one_line_refusal(rc, err)
    with sqlite3.connect(dst) as db:
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["users"]


def _made(tmp_path: Path, capsys) -> Path:
    path = tmp_path / "dc.db"
    assert run(capsys, "--store", str(path), "init", str(EXAMPLE))[0] == 0
    return path


def test_a_read_only_open_reads_and_refuses_every_write_in_one_line(tmp_path: Path, capsys) -> None:
    path = _made(tmp_path, capsys)
    before = dump(path)
    with open_store(path, read_only=True) as store:
        assert store.read_only and len(queries.cts(store)) == 8
        with pytest.raises(StoreError, match="read-only"):
            with store.transaction():
                pass
        with pytest.raises(StoreError, match="read-only"):
            with store.lock("dns", wait=0):
                pass
    assert dump(path) == before


def test_a_store_this_user_may_not_write_is_opened_read_only(tmp_path: Path, capsys,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = _made(tmp_path, capsys)
    monkeypatch.setattr("ctmanager.store.backends.writable", lambda _p: False)
    rc, out, err = run(capsys, "--store", str(path), "status", "--json")
    assert rc == 0 and len(json.loads(out)) == 8, err
    rc, out, err = run(capsys, "--store", str(path), "ct", "set", "acme", "--memory", "2G")
    one_line_refusal(rc, err, 1)
    assert "read-only" in err


def test_a_read_only_open_of_an_out_of_date_schema_says_so(tmp_path: Path, capsys) -> None:
    path = _made(tmp_path, capsys)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {schema.VERSION - 1}")
    with pytest.raises(StoreError, match=f"version {schema.VERSION - 1} is older") as caught:
        open_store(path, read_only=True)
    assert "\n" not in str(caught.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_a_monitoring_user_reads_a_store_it_may_not_write(capsys) -> None:
    """The reported case: `status --json` as another user, on a 0644 file in a 0755
    folder (no -wal or -shm yet, and none may be made there)."""
    import encodings.unicode_escape  # noqa: F401 - the child may not read this Python's files

    folder = Path(tempfile.mkdtemp(prefix="ctm-ro-"))
    try:
        folder.chmod(0o755)
        path = _made(folder, capsys)
        for p in folder.iterdir():
            p.chmod(0o644)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            import sys

            os.close(read)
            sys.stdout = sys.stderr = os.fdopen(write, "w")  # past pytest's capture
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            rc = main(["--store", str(path), "status", "--json"])
            sys.stdout.flush()
            os._exit(rc)
        os.close(write)
        with os.fdopen(read) as f:
            text = f.read()
        status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        assert status == 0 and len(json.loads(text)) == 8, text
        assert sorted(p.name for p in folder.iterdir()) == ["dc.db"]
    finally:
        import shutil
        shutil.rmtree(folder, ignore_errors=True)


# ---- 12. a CT in any rack -----------------------------------------------------
def _report(rack: int, hn: str, ctid: int, at: float) -> Report:
    return Report(rack, hn, "0123456789abcdef0123456789abcdef", 1, at, False, Metrics(0.1, 1 << 30, 1 << 29, 1 << 40, 1 << 39, 1),
                  (CtState(ctid, "UP", at),))


@pytest.fixture
def sqlite_inv(tmp_path: Path) -> inventory.Inventory:
    from ctmanager.store import open_store as opener

    store = opener(tmp_path / "two.db", create=True)
    plan = inventory.prepare_init(EXAMPLE)
    with store.transaction():
        dc = inventory.apply_init(store, plan)
    return inventory.Inventory(store, dc)


def test_a_ct_of_another_rack_is_found_from_the_store_with_its_fresh_report(sqlite_inv, tmp_path: Path) -> None:
    store = sqlite_inv.store
    _a, g = two_racks(sqlite_inv)
    config = mconfig.load(manager_toml(tmp_path))  # rack-101's
    with store.transaction(config=False):
        loop.save_reports(store, [(_report(102, "hn-102-1", g, store.now()), store.now())])
    asked: list[str] = []
    up, unreachable = reach.running_on(store, config, queries.find_ct(store, "globex"),
                                       lambda hn: asked.append(hn) or "not asked")
    assert (up, unreachable, asked) == (["hn-102-1"], {}, [])


def test_stale_hns_of_the_ct_s_rack_are_asked_never_the_config_s_rack(sqlite_inv, tmp_path: Path) -> None:
    store = sqlite_inv.store
    _a, g = two_racks(sqlite_inv)
    config = mconfig.load(manager_toml(tmp_path))
    asked: list[str] = []

    def ask(hn: str) -> Report | str:
        asked.append(hn)
        return _report(102, hn, g, 0.0) if hn == "hn-102-2" else "connection refused"
    up, unreachable = reach.running_on(store, config, queries.find_ct(store, "globex"), ask)
    assert up == ["hn-102-2"] and list(unreachable) == ["hn-102-1"]
    assert asked and all(hn.startswith("hn-102-") for hn in asked)


def test_another_rack_s_manager_config_is_found_beside_the_given_one(tmp_path: Path) -> None:
    first = manager_toml(tmp_path)  # the DC lab: rack-101 at the top, rack-102 under racks/rack-102
    other = tmp_path / "racks" / "rack-102"
    other.mkdir(parents=True)
    (other / "manager.toml").write_text(first.read_text().replace('"rack-101"', '"rack-102"')
                                        .replace(str(tmp_path / "rack.key"), str(rack_key(other))))
    c101 = mconfig.load(first)
    c102 = reach.rack_config(c101, 102)
    assert (c102.slot, c102.file) == (102, str(other / "manager.toml"))
    back = reach.rack_config(mconfig.load(other / "manager.toml"), 101)
    assert (back.slot, back.file) == (101, str(first))
    assert reach.rack_config(c101, 101) is c101
    (tmp_path / "notes.toml").write_text("not = [toml")  # other files there are passed over
    (tmp_path / "mgr-102-b.toml").write_text((other / "manager.toml").read_text())  # beside it wins, in name order
    assert reach.rack_config(c101, 102).file == str(tmp_path / "mgr-102-b.toml")
    fallback = reach.rack_config(c101, 103)  # none found: this config's SSH settings, that rack's HNs
    assert fallback.slot == 103 and fallback.ssh == c101.ssh


# ---- 13. the small ones -------------------------------------------------------
def test_small_refusals_are_one_line_exit_2_and_change_nothing(tmp_path: Path, capsys) -> None:
    path = _made(tmp_path, capsys)
    before = dump(path)
    for argv, says in ((["ct", "set", "acme"], "nothing to change"),
                       (["ct", "list", "--rack", "999"], "--rack"),
                       (["ct", "list", "--rack", "102"], "no rack-102 installed"),
                       (["ct", "list", "--tenant", "nosuch"], "no tenant"),
                       (["hn", "list", "--rack", "109"], "no rack-109 installed")):
        rc, out, err = run(capsys, "--store", str(path), *argv)
        one_line_refusal(rc, err)
        assert says in err and not out, (argv, err)
    assert dump(path) == before


def test_render_refuses_an_empty_folder_name(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _made(tmp_path, capsys)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    rc, _out, err = run(capsys, "--store", str(path), "render", "")
    one_line_refusal(rc, err)
    assert list(work.iterdir()) == []


def test_draining_the_last_hn_says_its_cts_stay(tmp_path: Path, capsys) -> None:
    path = _made(tmp_path, capsys)
    for hn in ("hn-101-1", "hn-101-2"):
        rc, out, _err = run(capsys, "--store", str(path), "hn", "drain", hn)
        assert rc == 0 and "move away" in out
    rc, out, _err = run(capsys, "--store", str(path), "hn", "drain", "hn-101-3")
    assert rc == 0 and "stay where they are" in out
    rc, out, _err = run(capsys, "--store", str(path), "--json", "hn", "drain", "hn-101-3")
    assert rc == 0 and json.loads(out)["cts_stay"] is True


def test_moving_an_unplaced_ct_says_it_was_not_placed(tmp_path: Path, capsys) -> None:
    path = _made(tmp_path, capsys)
    rc, out, err = run(capsys, "--store", str(path), "ct", "move", "acme", "--to", "hn-101-2")
    assert rc == 0 and "not placed on any HN yet" in out and "stopped there" not in out, err
    rc, out, err = run(capsys, "--store", str(path), "ct", "move", "acme", "--to", "hn-101-3")
    assert rc == 0 and "hn-101-2 -> hn-101-3" in out, err


def test_the_agent_refuses_no_report_to_and_a_reserve_at_or_over_its_memory(tmp_path: Path) -> None:
    from ctmanager.agent import config as aconfig

    good = agent_toml(tmp_path, '[capacity]\nmemory = "1G"\ndisk = "10G"\nreserve_memory = "256M"\n')
    assert aconfig.load(good).reserve_memory == 256 << 20
    empty = tmp_path / "empty.toml"
    empty.write_text(good.read_text().replace('report_to = ["10.101.0.1:7070"]', "report_to = []"))
    with pytest.raises(InputError, match="report_to"):
        aconfig.load(empty)
    for reserve in ("1G", "2G"):
        over = tmp_path / f"over-{reserve}.toml"
        over.write_text(good.read_text().replace('reserve_memory = "256M"', f'reserve_memory = "{reserve}"'))
        with pytest.raises(InputError, match="reserve_memory"):
            aconfig.load(over)


def test_errors_under_json_are_a_json_object_with_the_same_exit_codes(tmp_path: Path, capsys) -> None:
    path = _made(tmp_path, capsys)
    for argv, code in ((["--json", "ct", "set", "acme"], 2), (["ct", "show", "nosuch", "--json"], 2),
                       (["--json", "ct", "list", "--bogus"], 2), (["--json", "--store", str(tmp_path / "no.db"),
                                                                  "status"], 1)):
        store = [] if "--store" in argv else ["--store", str(path)]
        rc, out, err = run(capsys, *store, *argv)
        assert rc == code and not out and err.count("\n") == 1, (argv, err)
        assert set(json.loads(err)) == {"error"}
    rc, _out, err = run(capsys, "--store", str(path), "ct", "set", "acme")
    assert rc == 2 and err.startswith("ctmanager: error: ")  # plain text without --json


def test_a_group_s_help_ends_with_an_example(capsys) -> None:
    for group in ("ct", "hn", "store", "tenant"):
        rc, out, _err = run(capsys, group, "--help")
        assert rc == 0 and "example:\n  ctmanager " in out, (group, out)
