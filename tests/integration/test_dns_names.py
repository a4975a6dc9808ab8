"""Issue 35, class 1, against a real BIND 9: a tenant or CT named like a rack routing
name or a cloud service is refused before anything is written, so the rack's own
records stay as they were in the zone; a store from before the rule (a CT row that
claims such a name) publishes everything else, keeps the rack's name and reports
the collision. Zones that overlap never reach `named`: `init` refuses them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bindserver import Bind
from test_dns import bind  # noqa: F401  (the fixture: a real BIND the example DC publishes to)

from ctmanager.dc.model import Ct
from ctmanager.store import edits, open_store, queries
from tests.conftest import EXAMPLE, Cli, dump, no_store

INFRA = "rack-101.uc-inf.net.internal."


@pytest.fixture
def synced(bind: tuple[Cli, Bind]) -> tuple[Cli, Bind]:  # noqa: F811  (the fixture, by name)
    """test_dns's real BIND for the example DC, with its records published."""
    bind[0]("dns", "sync")
    return bind


def test_a_name_that_would_shadow_a_routing_name_is_refused_and_the_zone_keeps_it(synced: tuple[Cli, Bind]) -> None:
    cli, server = synced
    assert server.query(f"metrics.{INFRA}", "CNAME") == [f"metrics-101-1.{INFRA}"]
    before = dump(cli.store)
    for argv in (("tenant", "add", "metrics"), ("tenant", "add", "smtp"), ("ct", "add", "s3"),
                 ("ct", "add", "socks"), ("ct", "add", "hn-102-2"), ("ct", "add", "relay-102-1")):
        p = cli(*argv, "--rack", "101", check=False)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, (argv, p.stderr)
    assert dump(cli.store) == before
    # the rack's names in the real zone, as they were: collectd still reaches the metrics CT
    assert server.query(f"metrics.{INFRA}", "CNAME") == [f"metrics-101-1.{INFRA}"]
    assert server.dig(f"metrics.{INFRA}").split() == [f"metrics-101-1.{INFRA}", "10.101.2.5"]
    assert server.query(f"smtp.{INFRA}", "CNAME") == [f"relay-101.{INFRA}"]
    assert server.query(f"s3.{INFRA}") == ["172.31.0.10"]
    assert cli("dns", "diff").stdout.strip() == "nothing pending"


def test_a_collision_from_an_old_store_is_reported_and_the_rest_publishes(synced: tuple[Cli, Bind]) -> None:
    cli, server = synced
    store = open_store(cli.store)
    defaults = queries.dc_template(store).defaults
    with store.transaction():  # rows an older ctmanager let through
        edits.insert_ct(store, Ct(4000, "smtp", 101, None, None, "prod", "10.101.4.200", "storage-101-4", "UP",
                                  defaults, ()), 1.0)
        edits.insert_ct(store, Ct(4001, "build-9", 101, None, None, "prod", "10.101.4.201", "storage-101-4", "UP",
                                  defaults, ()), 1.0)
    store.close()
    p = cli("dns", "sync", "--json", check=False)
    out = json.loads(p.stdout)
    assert p.returncode == 1 and out["error"] == ""
    assert out["collisions"] == [f"smtp.{INFRA} is claimed by rack service relay's routing name and by CT smtp"]
    assert server.query(f"build-9.{INFRA}") == ["10.101.4.201"]  # the rest went out
    assert server.query(f"smtp.{INFRA}", "CNAME") == [f"relay-101.{INFRA}"]  # the rack's name kept
    assert "! COLLISION smtp." in cli("dns", "diff").stdout
    cli("ct", "add", "build-10", "--rack", "101")  # and edits go on
    assert server.query(f"build-10.{INFRA}") != []


def test_zones_that_overlap_never_reach_named(cli: Cli, tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace('infra_zone = "uc-inf.net.internal"', 'infra_zone = "example.net.internal"')
    (tmp_path / "manifests").mkdir()
    for m in (EXAMPLE.parent / "manifests").iterdir():
        (tmp_path / "manifests" / m.name).write_text(m.read_text())
    (tmp_path / "dc.toml").write_text(text)
    p = cli("init", str(tmp_path / "dc.toml"), check=False)
    assert p.returncode == 2 and "dc.tenant_zone" in p.stderr and "are one" in p.stderr
    assert no_store(cli.store)
