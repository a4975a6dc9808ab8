"""Hostile and careless input against the real judges of the output (issue:
hardening): `nginx -t`, `named-checkconf`, `danted -V`, and a store written by
something other than the CLI. Each test failed before its fix."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT, Cli, agent_toml, dump, no_store, raw_sql, require, tree


def one_line_refusal(p: subprocess.CompletedProcess[str], says: str, code: int = 2) -> None:
    assert p.returncode == code and says in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr


def nginx_ok(conf: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    prefix.mkdir(parents=True, exist_ok=True)
    return subprocess.run([require("nginx"), "-t", "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log")],
                          capture_output=True, text=True, timeout=120)


# ---- 10: edge routes that broke nginx ---------------------------------------------
@pytest.mark.parametrize("args, says", [
    (("/", "experiments"), "every tenant's default route"),
    (("/" + "a" * 4000 + "/", "experiments"), "a path must look like"),
    (("/" + "a/" * 17, "experiments"), "a path must look like"),
    (("/x/", ""), "service must be a tenant routing name"),
    (("/x/", "Bad;Name"), "service must be a tenant routing name"),
    (("/x y/", "experiments"), "a path must look like"),
    (("/x/", "experiments", "--allow", "10.0.0.0/8;"), "is not an IP network"),
])
def test_edge_paths_nginx_would_refuse_are_refused(example_store: Cli, args: tuple[str, ...], says: str) -> None:
    before = dump(example_store.store)
    one_line_refusal(example_store("edge", "path", "set", *args, check=False), says)
    assert dump(example_store.store) == before


def test_every_edge_path_ctmanager_accepts_passes_nginx(example_store: Cli, tmp_path: Path) -> None:
    for path in ("/a.b/", "/x/", "/" + "s" * 63 + "/" + "t/" * 14, "/~user/", "/a-b_c/"):
        example_store("edge", "path", "set", path, "experiments", "--strip")
    example_store("edge", "path", "set", "/x/", "wiki", "--tenant", "myhost")  # beside the global /x/
    conf = tmp_path / "edge.conf"
    example_store("edge", "config", str(conf), "--prefix", str(tmp_path / "prefix"))
    p = nginx_ok(conf, tmp_path / "prefix")
    assert p.returncode == 0, p.stderr
    assert r"rewrite ^/a\.b/(.*)$ /$1 break;" in conf.read_text()  # a dot in the prefix is not "any character"


def test_a_damaged_path_route_row_is_refused_before_nginx_sees_it(example_store: Cli, tmp_path: Path) -> None:
    raw_sql(example_store.store, "INSERT INTO path_routes (tenant, path, service, strip, allow, deny) VALUES "
            "('', '/x/ { return 200; } location /y/', 'experiments', 0, '[]', '[]')")
    conf = tmp_path / "edge.conf"
    one_line_refusal(example_store("edge", "config", str(conf), check=False), "damaged path route in the store")
    assert not conf.exists()


# ---- 11: references left behind -----------------------------------------------------
def test_removing_a_tenant_removes_its_edge_paths(example_store: Cli, tmp_path: Path) -> None:
    example_store("tenant", "add", "hooli", "--rack", "101")
    example_store("edge", "path", "set", "/p/", "svc", "--tenant", "hooli")
    example_store("tenant", "rm", "hooli")
    assert "hooli" not in example_store("edge", "path", "list").stdout
    example_store("tenant", "add", "hooli", "--rack", "101")  # a newcomer of the same name
    assert "/p/" not in example_store("edge", "path", "list").stdout


# ---- 12: route targets -------------------------------------------------------------
def test_a_route_may_not_point_at_another_tenants_ct_without_saying_so(example_store: Cli) -> None:
    before = dump(example_store.store)
    one_line_refusal(example_store("route", "set", "myhost", "smtp", "acme", check=False),
                     "is tenant acme's CT", code=2)
    assert dump(example_store.store) == before
    assert "(was relay-101)" in example_store("route", "set", "myhost", "smtp", "acme", "--foreign").stdout
    example_store("route", "set", "myhost", "smtp", "relay-101-2")  # its rack's service CT: fine


# ---- 8: paths that land in configs ---------------------------------------------------
@pytest.mark.parametrize("bad", ['/tmp/bq"; include "/etc/passwd', "/tmp/b\nq", "/tmp/b q", "/tmp/b{q}"])
def test_an_output_path_cannot_inject_into_named_conf(example_store: Cli, tmp_path: Path, bad: str) -> None:
    says = "without control characters" if "\n" in bad else "must be an absolute path"  # (refused as it is parsed)
    one_line_refusal(example_store("dns", "bind-config", bad, check=False), says)
    assert not Path(bad).exists()


def test_the_bind_config_ctmanager_writes_passes_named_checkconf(example_store: Cli, tmp_path: Path) -> None:
    out = tmp_path / "bind+1.0_x"
    example_store("dns", "bind-config", str(out), "--port", "5353")
    p = subprocess.run([require("named-checkconf"), str(out / "named.conf")], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_a_bad_external_address_is_one_line_and_a_good_config_passes_danted(example_store: Cli,
                                                                            tmp_path: Path) -> None:
    conf = tmp_path / "sockd.conf"
    one_line_refusal(example_store("socks", "config", str(conf), "--listen", "10.101.2.4:1080", "--external", "bad",
                                   check=False), "--external: is not an IPv4 address")
    assert not conf.exists()
    example_store("socks", "allow", "jira", "10.0.0.0/8")
    example_store("socks", "config", str(conf), "--listen", "127.0.0.1:1080", "--external", "127.0.0.1")
    p = subprocess.run([require("danted"), "-V", "-f", str(conf)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


# ---- 3: store data is checked at render time -----------------------------------------
@pytest.mark.parametrize("column, value", [
    ("hostname", "evil\nlxc.mount.entry = /etc etc none bind 0 0"), ("ip", "10.101.4.9\nlxc.x = y"),
    ("storage", "../../etc"), ("apps", '["ok", "bad app"]'), ("memory", "-1"), ("rack", "'101/../../x'"),
])
def test_a_tampered_ct_row_is_refused_by_render_and_writes_nothing(example_store: Cli, tmp_path: Path, backend: str,
                                                                   column: str, value: str) -> None:
    out = tmp_path / "out"
    example_store("render", str(out))
    before = tree(out)
    try:
        raw_sql(example_store.store, f"UPDATE cts SET {column} = ? WHERE hostname = 'acme'", (value,))
    except (psycopg.DataError, psycopg.IntegrityError):  # PostgreSQL's types and foreign keys refuse this damage
        assert backend == "postgresql" and column in ("rack", "storage")  # (raw sqlite3 leaves foreign keys off)
        example_store("render", str(out))
        assert tree(out) == before
        return
    one_line_refusal(example_store("render", str(out), check=False), "damaged store row: CT 1006", code=1)
    assert tree(out) == before


def test_a_zero_byte_store_is_refused_and_left_empty(sqlite_path: Path) -> None:
    cli = Cli(sqlite_path, ROOT)
    sqlite_path.write_bytes(b"")
    one_line_refusal(cli("status", check=False), "not a ctmanager store", code=1)
    assert sqlite_path.read_bytes() == b""


def test_an_empty_database_is_refused_and_left_empty(pg_cluster) -> None:
    from tests.conftest import fresh_pg_store

    cli = Cli(fresh_pg_store(pg_cluster), ROOT)
    one_line_refusal(cli("status", check=False), "not a ctmanager store", code=1)
    assert no_store(cli.store)


# ---- 15: tracebacks instead of one line -------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["init", "{deep}"], ["rack", "install", "102", "{deep}"], ["plan", "--config", "{deep}"],
])
def test_deeply_nested_toml_is_one_line(example_store: Cli, tmp_path: Path, argv: list[str]) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    p = example_store(*[a.replace("{deep}", str(deep)) for a in argv], check=False)
    assert p.returncode == 2 and "nested too deeply" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_ctagent_apply_on_a_flood_of_brackets_answers_in_json(tmp_path: Path) -> None:
    import json
    import os
    import sys

    conf = agent_toml(tmp_path, f'runtime = "lxc"\nstate_dir = "{tmp_path}/state"\n')
    p = subprocess.run([sys.executable, "-m", "ctmanager.agent.cli", "-c", str(conf), "apply", "start", "1005"],
                       input=b"[" * 65536, capture_output=True, timeout=60, env={**os.environ})
    assert p.returncode == 2, p.stderr
    result = json.loads(p.stdout)
    assert result["result"] == "bad_input" and "nested too deeply" in result["message"]
    assert b"Traceback" not in p.stderr


def test_multicast_and_broadcast_macs_are_refused_in_a_manifest(example_store: Cli, tmp_path: Path) -> None:
    from tests.conftest import ROOT

    text = (ROOT / "templates/dc/manifests/rack-102.toml").read_text()
    first_mac = text.split('mac = "')[1].split('"')[0]
    before = dump(example_store.store)
    for bad in ("01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "33:33:00:00:00:01"):
        manifest = tmp_path / f"m-{bad[:2]}.toml"
        manifest.write_text(text.replace(first_mac, bad, 1))
        one_line_refusal(example_store("rack", "install", "102", str(manifest), check=False),
                         "mac")
    assert dump(example_store.store) == before
