"""`ctmanager store copy`: SQLite -> PostgreSQL -> SQLite, every view the same,
ids and sequences kept; a destination that holds a store is refused untouched."""

from __future__ import annotations

import json
from pathlib import Path

from ctmanager.lab.pgserver import Cluster
from tests.conftest import EXAMPLE, ROOT, Cli, dump, no_store

RACK102 = str(ROOT / "templates/dc/manifests/rack-102.toml")
VIEWS = (["status", "--json"], ["tenant", "list", "--json"], ["route", "list", "--json"], ["rack", "list", "--json"],
         ["ct", "list", "--json"], ["edge", "path", "list", "--json"], ["socks", "list", "--json"])


def views(cli: Cli, tmp_path: Path, name: str) -> dict[str, object]:
    out: dict[str, object] = {" ".join(v): json.loads(cli(*v).stdout) for v in VIEWS}
    rendered = tmp_path / f"render-{name}"
    cli("render", str(rendered))
    out["render"] = {str(p.relative_to(rendered)): p.read_bytes() for p in sorted(rendered.rglob("*"))
                     if p.is_file() and p.name != ".ctmanager-render.json"}  # (its file times differ, rightly)
    return out


def test_a_store_copied_to_postgresql_and_back_shows_the_same_everywhere(sqlite_path: Path, pg_cluster: Cluster,
                                                                        tmp_path: Path) -> None:
    src = Cli(sqlite_path, ROOT)
    src("init", str(EXAMPLE))
    src("rack", "install", "rack-102", RACK102)
    src("tenant", "add", "zeta-1", "--rack", "rack-102", "--apps", "jira")
    src("tenant", "add", "globex", "--rack", "rack-101", "--apps", "wiki")
    src("ct", "add", "extra-1", "--tenant", "globex", "--rack", "rack-101")
    src("ct", "rm", "extra-1")  # a tombstone and a used CTID
    src("route", "set", "myhost", "smtp", "relay-101-2")
    src("edge", "path", "set", "/x/", "wiki", "--tenant", "globex")
    src("socks", "allow", "jira", "10.0.0.0/8")
    before = views(src, tmp_path, "sqlite")

    pg_url = pg_cluster.create_database("ctm_copy")
    p = src("store", "copy", str(sqlite_path), pg_url)
    assert "copied" in p.stdout and "events:" in p.stderr
    pg = Cli(pg_url, ROOT)
    assert views(pg, tmp_path, "pg") == before

    back = tmp_path / "back.db"
    json.loads(pg("store", "copy", pg_url, str(back), "--json").stdout)
    assert views(Cli(back, ROOT), tmp_path, "back") == before

    # ids go on after the copied ones, on both: the next CT, event and journal id
    new_src = json.loads(src("ct", "add", "extra-2", "--tenant", "globex", "--rack", "rack-101", "--json").stdout)
    new_pg = json.loads(pg("ct", "add", "extra-2", "--tenant", "globex", "--rack", "rack-101", "--json").stdout)
    assert new_pg["ctid"] == new_src["ctid"]
    pg("tenant", "add", "hooli", "--rack", "rack-101")  # events get ids after the copied ones (no clash)


def test_a_destination_that_holds_a_store_is_refused_and_untouched(sqlite_path: Path, pg_cluster: Cluster,
                                                                  tmp_path: Path) -> None:
    src = Cli(sqlite_path, ROOT)
    src("init", str(EXAMPLE))
    other = tmp_path / "other.db"
    Cli(other, ROOT)("init", str(EXAMPLE))
    before = dump(other)
    for dst in (str(other), str(sqlite_path)):
        p = src("store", "copy", str(sqlite_path), dst, check=False)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert dump(other) == before
    p = src("store", "copy", str(tmp_path / "missing.db"), str(tmp_path / "new.db"), check=False)
    assert p.returncode == 1 and "no store at" in p.stderr and no_store(tmp_path / "new.db")
    url = pg_cluster.create_database("ctm_copy2")
    p = src("store", "copy", str(tmp_path / "missing.db"), url, check=False)
    assert p.returncode == 1 and no_store(url)


def test_a_password_in_the_store_url_is_never_printed(pg_cluster: Cluster, tmp_path: Path) -> None:
    """The cluster trusts local users, so any password is accepted: every command
    below works, and none of them says the password (nor does an error)."""
    secret = "S3cr@t%25x"  # an @ and a percent-escape in it too
    url = pg_cluster.create_database("ctm_pw").replace("postgresql:///", f"postgresql://postgres:{secret}@/", 1)
    cli = Cli(url, ROOT)
    outs = [cli("init", str(EXAMPLE)), cli("init", str(EXAMPLE), check=False), cli("status"),
            cli("tenant", "add", "globex", "--rack", "rack-101"), cli("store", "copy", url, str(tmp_path / "c.db")),
            cli("store", "copy", url, url, check=False), cli("--json", "init", str(EXAMPLE), check=False)]
    bad = url.replace("ctm_pw", "no_such_db") + "&password=An0ther"
    outs += [Cli(bad, ROOT)("status", check=False), Cli(url + "&sslmode=bogus", ROOT)("status", check=False)]
    for p in outs:
        text = p.stdout + p.stderr
        assert "S3cr" not in text and "An0ther" not in text and "%25x" not in text, text
    assert outs[1].returncode == 2 and "already initialised" in outs[1].stderr
    assert outs[-2].returncode == 1 and "cannot connect" in outs[-2].stderr


def test_a_locator_of_another_scheme_never_becomes_a_file(pg_cluster: Cluster, tmp_path: Path) -> None:
    """Issue 35: `PostgreSQL://`, `postgresq://`, `mysql://` or a leading space were
    taken for SQLite paths: `store copy` made a folder named with the password."""
    src = tmp_path / "src.db"
    cli = Cli(src, tmp_path)
    cli("init", str(EXAMPLE))
    made = sorted(p.name for p in tmp_path.iterdir())
    for dst in ("PostgreSQL://u:S3cr3t@h/x", "postgresq://u:S3cr3t@h/x", "mysql://u:S3cr3t@h/x",
                " " + pg_cluster.url("x").replace("user=postgres", "user=postgres&password=S3cr3t")):
        for argv in (["store", "copy", str(src), dst], ["--store", dst, "status"]):
            p = cli(*argv, check=False)
            assert p.returncode == 2 and p.stderr.count("\n") == 1 and not p.stdout, p.stderr
            assert "S3cr3t" not in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == made


def test_init_refuses_a_database_of_another_program(pg_cluster: Cluster) -> None:
    from tests.conftest import raw_sql

    url = pg_cluster.create_database("ctm_foreign")
    raw_sql(url, "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    raw_sql(url, "INSERT INTO users (id, name) VALUES (1, 'alice')")
    before = dump(url)
    p = Cli(url, ROOT)("init", str(EXAMPLE), check=False)
    assert p.returncode == 2 and "another program" in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert dump(url) == before  # not one of our 25 tables added


def test_a_role_that_may_only_read_reads_and_an_old_schema_says_so(pg_cluster: Cluster) -> None:
    from ctmanager.store.schema import VERSION
    from tests.conftest import raw_sql

    url = pg_cluster.create_database("ctm_ro")
    Cli(url, ROOT)("init", str(EXAMPLE))
    raw_sql(url, "DO $$ BEGIN CREATE ROLE ctm_monitor LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    raw_sql(url, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO ctm_monitor")
    monitor = Cli(url.replace("user=postgres", "user=ctm_monitor"), ROOT)
    assert len(json.loads(monitor("status", "--json").stdout)) == 8
    raw_sql(url, "REVOKE USAGE ON SCHEMA public FROM PUBLIC")  # a role that cannot look in is told so
    p = monitor("status", check=False)
    assert p.returncode == 1 and "may not use" in p.stderr and "not a ctmanager store" not in p.stderr, p.stderr
    raw_sql(url, "GRANT USAGE ON SCHEMA public TO PUBLIC")
    p = monitor("ct", "set", "acme", "--memory", "2G", check=False)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    raw_sql(url, "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(VERSION - 1),))
    p = monitor("status", check=False)
    assert p.returncode == 1 and "older" in p.stderr and p.stderr.count("\n") == 1, p.stderr
