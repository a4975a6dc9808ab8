"""The real `ctmanager` command: main flow, --help, JSON, and every bad input
(one-line message, exit code 2, store and output folder unchanged)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, ROOT, Cli, dump, manager_toml, no_store, tree

RACK102 = str(ROOT / "templates/dc/manifests/rack-102.toml")


def test_main_flow(example_store, tmp_path: Path) -> None:
    cli = example_store
    out = cli("rack", "install", "rack-102", RACK102).stdout
    assert "installed rack-102 in slot 102: network 10.102.0.0/16" in out
    assert "storage-102-3 | storage | 10.102.1.3" in out
    cli("tenant", "add", "bigco", "--rack", "102", "--apps", "jira,bamboo", "--memory", "16G")
    assert "(was relay-101)" in cli("route", "set", "myhost", "smtp", "relay-101-2").stdout
    status = cli("status").stdout.splitlines()
    assert [c.strip() for c in status[0].split(" | ")] == ["CTID", "HOSTNAME", "TENANT", "IP", "HN", "ADMST", "OPST", "SINCE", "REPORT_AGE", "CRASH_LOOP", "MANAGER", "BACKUP"]
    rows = json.loads(cli("status", "--json").stdout)
    assert set(rows[0]) == {"ctid", "hostname", "tenant", "ip", "hn", "admst", "opst", "since", "report_age", "crash_loop",
                            "manager", "backup"}
    bigco = next(r for r in rows if r["hostname"] == "bigco")
    assert bigco == {"ctid": bigco["ctid"], "hostname": "bigco", "tenant": "bigco", "ip": "10.102.4.1", "hn": None,
                     "admst": "UP", "opst": "UNKNOWN", "since": None, "report_age": None, "crash_loop": None,
                     "manager": None, "backup": None}
    assert len(rows) == 14 and len(status) == 15
    cli("ct", "set", "bigco", "--admst", "down")
    assert json.loads(cli("ct", "show", "bigco", "--json").stdout)["admst"] == "DOWN"
    routes = json.loads(cli("route", "list", "--tenant", "myhost", "--json").stdout)
    assert {"tenant": "myhost", "service": "smtp", "target": "relay-101-2"} in routes
    outdir = tmp_path / "render"
    assert "72 written" in cli("render", str(outdir)).stdout  # 14 CTs x 5 files + 2 storage exports
    assert "0 written, 0 removed" in cli("render", str(outdir)).stdout
    cli("ct", "set", "bigco", "--memory", "24G")
    diff = cli("render", str(outdir), "--diff").stdout
    assert '+PHYSPAGES="0:24G"' in diff and "would change" in diff


def test_every_command_has_help_with_an_example(cli) -> None:
    commands = [["init"], ["rack", "install"], ["rack", "list"], ["tenant", "add"], ["tenant", "list"], ["tenant", "rm"],
                ["ct", "add"], ["ct", "set"], ["ct", "reset"], ["ct", "rm"], ["ct", "list"], ["ct", "show"], ["route", "set"],
                ["route", "rm"], ["route", "list"], ["render"], ["status"]]
    for words in commands:
        out = cli(*words, "--help").stdout
        assert "example:" in out and f"ctmanager {' '.join(words)}" in out, words


def test_store_location_order(tmp_path: Path) -> None:
    env_store = tmp_path / "env.db"
    flag_store = tmp_path / "flag.db"

    def run(*a: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ctmanager", *a], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, **env})

    assert run("--store", str(flag_store), "init", "example", CTMANAGER_STORE=str(env_store)).returncode == 0
    assert flag_store.exists() and not env_store.exists()
    proc = run("status", CTMANAGER_STORE=str(tmp_path / "missing.db"))
    assert proc.returncode == 1 and "no store at" in proc.stderr and "init" in proc.stderr


# (id, args, expected message part). Run against the initialised example store.
BAD_CLI = [
    ("hostname-upper", ["ct", "add", "Build1", "--rack", "101"], "must be lower case"),
    ("hostname-underscore", ["ct", "add", "build_1", "--rack", "101"], "not a DNS label"),
    ("hostname-long", ["ct", "add", "b" * 64, "--rack", "101"], "longer than 63"),
    ("hostname-dot", ["ct", "add", "b.x", "--rack", "101"], "not a DNS label"),
    ("hostname-space", ["ct", "add", "b x", "--rack", "101"], "not a DNS label"),
    ("hostname-semicolon", ["ct", "add", "b;reboot", "--rack", "101"], "not a DNS label"),
    ("hostname-quote", ["ct", "add", 'b"x', "--rack", "101"], "not a DNS label"),
    ("hostname-newline", ["ct", "add", "b\nx", "--rack", "101"], "not a DNS label"),
    ("tenant-bad", ["tenant", "add", "My_Host", "--rack", "101"], "must be lower case"),
    ("duplicate-hostname", ["ct", "add", "myhost", "--rack", "101"], "already used by CT 1005"),
    ("duplicate-tenant", ["tenant", "add", "acme", "--rack", "101"], "tenant 'acme' already exists"),
    ("duplicate-ctid", ["ct", "add", "new", "--rack", "101", "--ctid", "1005"], "CTID 1005 is already used by myhost"),
    ("negative-memory", ["ct", "add", "new", "--rack", "101", "--memory=-1G"], "must be a size"),
    ("absurd-memory", ["ct", "add", "new", "--rack", "101", "--memory", "100T"], "at most 512G"),
    ("absurd-cpus", ["tenant", "add", "new", "--rack", "101", "--cpus", "1000"], "between 1 and 64"),
    ("zero-disk", ["ct", "add", "new", "--rack", "101", "--disk", "0"], "at least"),
    ("route-unknown-ct", ["route", "set", "myhost", "smtp", "relay-999-1"], "neither a CT nor a pool"),
    ("route-unknown-tenant", ["route", "set", "nobody", "smtp", "relay-101-1"], "no tenant 'nobody'"),
    ("route-bad-service", ["route", "set", "myhost", "SMTP;x", "relay-101-1"], "service"),
    ("rm-route-target", ["ct", "rm", "socks-101-1"], "target of route(s)"),
    ("occupied-slot", ["rack", "install", "101", RACK102], "slot 101 is occupied"),
    ("slot-out-of-range", ["rack", "install", "200", RACK102], "slot 200 is not a slot of DC dc1"),
    ("slot-not-a-number", ["rack", "install", "rack-x", RACK102], "not a rack like rack-101"),
    ("rack-not-installed", ["ct", "add", "new", "--rack", "105"], "rack-105 is not installed"),
    ("unknown-ct", ["ct", "show", "nope"], "no CT 'nope'"),
    ("reset-unknown-ct", ["ct", "reset", "nope"], "no CT 'nope'"),
    ("reset-no-ct", ["ct", "reset"], "the following arguments are required: ct"),
    ("bad-admst", ["ct", "set", "myhost", "--admst", "sideways"], "invalid choice"),
    ("bad-ctid", ["ct", "add", "new", "--rack", "101", "--ctid", "12ab"], "not an integer"),
    ("bad-manifest", ["rack", "install", "102", str(EXAMPLE)], "nodes: is required"),
    ("missing-manifest", ["rack", "install", "102", "/nonexistent.toml"], "no manifest '/nonexistent.toml': not a file"),
    ("init-twice", ["init", "example"], "already initialised"),
    ("render-zero-workers", ["render", "/tmp/ctm-never-written", "--workers", "0"], "--workers: must be from 1 to"),
]


@pytest.mark.parametrize("args,message", [b[1:] for b in BAD_CLI], ids=[b[0] for b in BAD_CLI])
def test_bad_cli_input_changes_nothing(example_store, tmp_path: Path, args: list[str], message: str) -> None:
    cli = example_store
    outdir = tmp_path / "render"
    cli("render", str(outdir))
    before_store, before_out = dump(cli.store), tree(outdir)
    proc = cli(*args, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and re.match(r"ctmanager( [a-z]+)*: error: ", lines[0]), proc.stderr
    assert message in lines[0]
    assert proc.stdout == ""
    assert dump(cli.store) == before_store
    cli("render", str(outdir))
    assert tree(outdir) == before_out


def test_a_crash_loop_shows_in_status_and_ct_reset_clears_it(example_store) -> None:
    from ctmanager.store import loop, open_store, queries

    cli = example_store
    with open_store(cli.store) as store, store.transaction(config=False):  # as the manager daemon records it
        loop.mark_crash_loops(store, [(queries.find_ct(store, "acme").ctid, 5)], 1_800_000_000.0)
    acme = next(line for line in cli("status").stdout.splitlines() if " acme " in line)
    assert [c.strip() for c in acme.split("|")][-3:] == ["5 crashes", "-", "-"], acme  # no manager leads here
    rows = {r["hostname"]: r for r in json.loads(cli("status", "--json").stdout)}
    assert rows["acme"]["crash_loop"] == {"crashes": 5, "since": "2027-01-15T08:00:00Z"}
    assert rows["myhost"]["crash_loop"] is None
    out = json.loads(cli("ct", "reset", "acme", "--json").stdout)
    assert out == {"ctid": 1006, "hostname": "acme", "cleared": True, "crashes": 5, "since": "2027-01-15T08:00:00Z"}
    assert json.loads(cli("status", "--json").stdout)[6]["crash_loop"] is None
    assert cli("ct", "reset", "1006").stdout == "CT 1006 acme: not in a crash loop; nothing to clear\n"
    with open_store(cli.store) as store, store.transaction(config=False):
        loop.mark_crash_loops(store, [(1006, 6)], 1_800_000_000.0)
    assert cli("ct", "reset", "acme").stdout == (
        "CT 1006 acme: crash loop cleared (6 crashes, left down since 2027-01-15T08:00:00Z); "
        "the manager starts it again\n")


BAD_TEMPLATES = [
    ("malformed", "[network]", "[network", "invalid TOML"),
    ("unknown-key", "ttl = 60", "ttl = 60\ntll = 5", "dc.tll: unknown key"),
    ("overlapping-slots", "count = 16\n", "count = 16\n[[slots]]\nfirst = 116\ncount = 2\n", "overlap"),
    ("outside-supernet", 'supernet = "10.0.0.0/8"', 'supernet = "10.0.0.0/10"', "outside supernet"),
    ("bad-tenant", 'name = "acme"', 'name = "Acme"', "tenants[1].name: must be lower case"),
    ("absurd-resources", 'memory = "4G"', 'memory = "4096G"', "tenants[1].memory: must be at most"),
    ("tenant-vs-service-hostname", 'name = "acme"', 'name = "relay-101-1"',
     "'relay-101-1' is the name of a rack service's CT"),
]


@pytest.mark.parametrize("old,new,message", [b[1:] for b in BAD_TEMPLATES], ids=[b[0] for b in BAD_TEMPLATES])
def test_bad_template_init_leaves_no_store(cli, tmp_path: Path, old: str, new: str, message: str) -> None:
    shutil.copytree(EXAMPLE.parent, tmp_path / "dc")
    path = tmp_path / "dc" / "example.toml"
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    proc = cli("init", str(path), check=False)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr
    assert no_store(cli.store)


def test_render_template_error_leaves_output_unchanged(example_store, tmp_path: Path) -> None:
    cli = example_store
    outdir = tmp_path / "render"
    cli("render", str(outdir))
    before = tree(outdir)
    override = tmp_path / "tpl" / "ct" / "common"
    override.mkdir(parents=True)
    (override / "resolv.conf.j2").write_text("search {{ dns.nope }}\n")
    env_cli = subprocess.run([sys.executable, "-m", "ctmanager", "render", str(outdir)], cwd=ROOT, text=True,
                             capture_output=True, env={**__import__("os").environ, "CTMANAGER_STORE": str(cli.store),
                                                       "CTMANAGER_TEMPLATES": str(tmp_path / "tpl")})
    assert env_cli.returncode == 2
    assert "resolv.conf.j2:1" in env_cli.stderr and "nope" in env_cli.stderr
    assert tree(outdir) == before


def test_cli_and_a_daemon_share_the_store(example_store) -> None:
    """A writer holding the store busy (like the manager daemon) must not make
    CLI commands fail: they wait for the lock (busy timeout) and all land."""
    from ctmanager.store import open_store

    cli = example_store
    stop = threading.Event()
    errors: list[BaseException] = []

    def daemon() -> None:
        try:
            with open_store(cli.store) as store:
                while not stop.is_set():
                    with store.transaction():
                        store.event("daemon.tick", "test")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    t = threading.Thread(target=daemon)
    t.start()
    try:
        procs = [subprocess.Popen([sys.executable, "-m", "ctmanager", "ct", "add", f"par-{i}", "--rack", "101"],
                                  cwd=ROOT, env={**__import__("os").environ, "CTMANAGER_STORE": str(cli.store)},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(6)]
        results = [(p.wait(timeout=60), p.stderr.read()) for p in procs]
    finally:
        stop.set()
        t.join(timeout=30)
    assert not errors
    assert all(rc == 0 for rc, _ in results), results
    rows = json.loads(cli("status", "--json").stdout)
    par = [r for r in rows if r["hostname"].startswith("par-")]
    assert len(par) == 6 and len({r["ip"] for r in par}) == 6 and len({r["ctid"] for r in par}) == 6


@pytest.mark.parametrize("command", ["run", "plan"])
def test_a_manager_for_a_rack_not_installed_refuses_to_start_and_names_the_installed(example_store, tmp_path: Path,
                                                                                     command: str) -> None:
    conf = manager_toml(tmp_path)
    conf.write_text(conf.read_text().replace('rack = "rack-101"', 'rack = "rack-105"'))
    before = dump(example_store.store)
    p = example_store(command, "--config", str(conf), check=False)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "rack-105 (the manager config's rack) is not installed" in p.stderr and "installed: rack-101" in p.stderr
    assert dump(example_store.store) == before


def test_manager_status_before_any_manager_ran(example_store: Cli) -> None:
    cli = example_store
    assert json.loads(cli("manager", "status", "--json").stdout) == [{"rack": 101, "leader": None, "managers": []}]
    rows = [[c.strip() for c in line.split("|")] for line in cli("manager", "status").stdout.splitlines()]
    assert rows == [["RACK", "MANAGER", "ROLE", "EPOCH", "LEASE_AGE", "LAST_REPORT", "CHECKED_IN", "VERSION", "DETAIL"],
                    ["rack-101", "-", "none", "-", "-", "-", "-", "-", "no manager has run"]]
    bad = cli("manager", "status", "--rack", "105", check=False)
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr == \
        "ctmanager: error: --rack: no rack-105 installed (ctmanager rack list)\n"


def test_tenant_list_json_gives_each_tenants_public_and_internal_name(example_store: Cli) -> None:
    rows = {r["name"]: r for r in json.loads(example_store("tenant", "list", "--json").stdout)}
    assert (rows["myhost"]["fqdn"], rows["myhost"]["internal_fqdn"]) == ("myhost.example.net",
                                                                          "myhost.example.net.internal")
    example_store("tenant", "add", "globex", "--rack", "rack-101")
    got = {r["name"]: r["fqdn"] for r in json.loads(example_store("tenant", "list", "--json").stdout)}
    assert got["globex"] == "globex.example.net"


def test_peering_views_and_config(example_store: Cli, tmp_path: Path) -> None:
    rows = json.loads(example_store("peering", "list", "--json").stdout)
    assert [r["name"] for r in rows] == ["aws-vpc1-a", "aws-vpc1-b"] and rows[0]["bfd"] == {"interval_ms": 100,
                                                                                             "multiplier": 3}
    assert "vlan:           301" in example_store("peering", "show", "aws-vpc1-a").stdout
    bad = example_store("peering", "show", "nope", check=False)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "aws-vpc1-a, aws-vpc1-b" in bad.stderr
    wrote = json.loads(example_store("peering", "config", str(tmp_path / "out"), "--json").stdout)["written"]
    assert str(tmp_path / "out" / "border-1" / "bird.conf") in wrote
    assert (tmp_path / "out" / "routes" / "rack-101.txt").read_text().count("172.31.0.0/16 via 10.0.6.1") == 1
    down = example_store("peering", "status", "--socket", str(tmp_path / "nobird.ctl"), check=False)
    assert down.returncode != 0 and down.stderr.count("\n") == 1 and "is BIRD running there?" in down.stderr


def test_the_proxies_folder_holds_what_ctmanager_renders_for_the_example(example_store: Cli, tmp_path: Path) -> None:
    """proxies/ is for reading: it must stay what the example DC renders today."""
    example_store("socks", "allow", "jira", "203.0.113.0/24", "--port", "443")
    example_store("edge", "config", str(tmp_path / "nginx-edge.conf"))
    example_store("socks", "config", str(tmp_path / "danted.conf"), "--listen", "10.101.2.4:1080",
                  "--external", "10.101.2.4")
    (tmp_path / "postfix-main.cf.snippet").write_text(
        example_store("mail", "postfix-config", "--mailmap", "127.0.0.1:10027").stdout)
    for name in ("nginx-edge.conf", "danted.conf", "postfix-main.cf.snippet"):
        assert (tmp_path / name).read_text() == (ROOT / "proxies" / name).read_text(), \
            f"proxies/{name} is not what ctmanager renders now: render it again (proxies/README.md)"
