"""Inventory operations against a real SQLite store."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctmanager.dc import manifest
from ctmanager.errors import ConflictError, ExhaustedError, InputError, NotFoundError
from ctmanager.operations import inventory
from ctmanager.store import open_store, queries
from ctmanager.store.lease import check_in

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "templates" / "dc" / "example.toml"




def change(inv: inventory.Inventory, fn, *args, **kw):
    with inv.store.transaction():
        return fn(*args, **kw)


def test_init_places_services_and_tenants(inv: inventory.Inventory) -> None:
    hosts = {c.hostname: c for c in queries.cts(inv.store)}
    assert {"mailstore-101-1", "relay-101-1", "relay-101-2", "socks-101-1", "metrics-101-1"} <= set(hosts)
    assert hosts["relay-101-1"].ip == "10.101.2.2"  # service range
    assert hosts["myhost"].ip.startswith("10.101.4.")  # CT range
    assert hosts["myhost"].storage == "storage-101-4"
    routes = {r.service: r.target for r in queries.routes(inv.store, tenant="myhost")}
    assert routes == {"mailstore": "mailstore-101-1", "smtp": "relay-101", "socks": "socks-101-1", "metrics": "metrics-101-1"}


def test_occupied_slot_is_refused(inv: inventory.Inventory) -> None:
    nodes = manifest.load(ROOT / "templates/dc/manifests/rack-102.toml", inv.dc)
    with pytest.raises(ConflictError, match="slot 101 is occupied"):
        change(inv, inv.install_rack, 101, nodes, "m")
    with pytest.raises(ConflictError, match="already installed as hn-101-1"):
        change(inv, inv.install_rack, 102, manifest.load(ROOT / "templates/dc/manifests/rack-101.toml", inv.dc), "m")


def test_duplicates_are_refused(inv: inventory.Inventory) -> None:
    res = inv.dc.defaults
    with pytest.raises(ConflictError, match="hostname 'myhost' is already used by CT"):
        change(inv, inv.add_ct, "myhost", 101, resources=res)
    with pytest.raises(ConflictError, match="CTID 1005 is already used by myhost"):
        change(inv, inv.add_ct, "other", 101, resources=res, ctid=1005)
    with pytest.raises(ConflictError, match="name of a service pool"):
        change(inv, inv.add_ct, "relay-101", 101, resources=res)
    with pytest.raises(ConflictError, match="already used by a node"):
        change(inv, inv.add_ct, "hn-101-1", 101, resources=res)
    check_in(inv.store, 101, "mgr-101-a", "pid 1", "", "leader", 1, None)  # a manager's host is a machine too
    with pytest.raises(ConflictError, match="'mgr-101-a' is already used by a manager of rack-101"):
        change(inv, inv.add_ct, "mgr-101-a", 101, resources=res)
    with pytest.raises(ConflictError, match="already used by a manager"):
        change(inv, inv.add_tenant, "mgr-101-a", 101, [], res)


def test_route_rules(inv: inventory.Inventory) -> None:
    assert change(inv, inv.set_route, "myhost", "smtp", "relay-101-2") == "relay-101"
    with pytest.raises(NotFoundError, match="neither a CT nor a pool"):
        change(inv, inv.set_route, "myhost", "smtp", "relay-999-1")
    with pytest.raises(NotFoundError, match="no tenant"):
        change(inv, inv.set_route, "nobody", "smtp", "relay-101-1")
    with pytest.raises(ConflictError, match="myhost/smtp"):
        change(inv, inv.rm_ct, "relay-101-2")
    with pytest.raises(ConflictError, match="core CT"):
        change(inv, inv.rm_ct, "myhost")


def test_removed_ctid_is_never_reused(inv: inventory.Inventory) -> None:
    ct = change(inv, inv.add_ct, "tmp-1", 101, resources=inv.dc.defaults)
    change(inv, inv.rm_ct, "tmp-1")
    again = change(inv, inv.add_ct, "tmp-2", 101, resources=inv.dc.defaults)
    assert again.ctid == ct.ctid + 1
    assert again.ip != ct.ip  # the address waits (quarantine) until the HNs reported tmp-1 gone
    change(inv, inv.store.execute, "DELETE FROM removed WHERE ct_id = ?", (ct.ctid,))  # they did
    third = change(inv, inv.add_ct, "tmp-3", 101, resources=inv.dc.defaults)
    assert third.ip == ct.ip and third.ctid == ct.ctid + 2  # the address may be reused; the CTID (and /data) not


def test_tenant_rm_removes_cts_and_routes(inv: inventory.Inventory) -> None:
    change(inv, inv.add_ct, "acme-build", 101, resources=inv.dc.defaults, tenant="acme")
    removed = change(inv, inv.rm_tenant, "acme")
    assert {c.hostname for c in removed} == {"acme", "acme-build"}
    assert queries.routes(inv.store, tenant="acme") == []
    with pytest.raises(NotFoundError):
        queries.find_ct(inv.store, "acme")


def test_tenant_ct_must_share_the_rack(inv: inventory.Inventory) -> None:
    change(inv, inv.install_rack, 102, manifest.load(ROOT / "templates/dc/manifests/rack-102.toml", inv.dc), "m")
    with pytest.raises(InputError, match="lives in rack-101"):
        change(inv, inv.add_ct, "x", 102, resources=inv.dc.defaults, tenant="myhost")


def test_ct_range_exhaustion(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace('cts = "4.1-255.254"', 'cts = "4.1-4.4"')
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "rack-101.toml").write_bytes((ROOT / "templates/dc/manifests/rack-101.toml").read_bytes())
    (tmp_path / "dc.toml").write_text(text)
    store = open_store(tmp_path / "s.db", create=True)
    with store.transaction():
        dc = inventory.init(store, tmp_path / "dc.toml")  # 3 tenants use 3 of 4
    inv = inventory.Inventory(store, dc)
    change(inv, inv.add_ct, "fourth", 101, resources=dc.defaults)
    before = queries.status(store, 0.0)
    with pytest.raises(ExhaustedError, match="all 4 addresses of 10.101.0.0/16 range 4.1-4.4"):
        change(inv, inv.add_ct, "fifth", 101, resources=dc.defaults)
    assert [tuple(r) for r in queries.status(store, 0.0)] == [tuple(r) for r in before]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["ct", "tenant", "rm"]), st.integers(0, 1000)), max_size=25))
def test_store_level_ips_unique_outside_node_ranges_and_stable(tmp_path_factory, ops) -> None:
    tmp = tmp_path_factory.mktemp("p")
    store = open_store(tmp / "s.db", create=True)
    with store.transaction():
        dc = inventory.init(store, EXAMPLE)
    inv = inventory.Inventory(store, dc)
    seen: dict[int, str] = {c.ctid: c.ip for c in queries.cts(store)}
    for i, (op, n) in enumerate(ops):
        if op == "ct":
            change(inv, inv.add_ct, f"c{i}", 101, resources=dc.defaults)
        elif op == "tenant":
            change(inv, inv.add_tenant, f"t{i}", 101, (), dc.defaults)
        else:
            free = [c for c in queries.cts(store) if c.hostname.startswith("c")]
            if free:
                change(inv, inv.rm_ct, free[n % len(free)].hostname)
        cts = queries.cts(store)
        ips = [c.ip for c in cts]
        assert len(ips) == len(set(ips))
        node_ips = {n.ip for n in queries.nodes(store)}
        net = ipaddress.IPv4Network("10.101.0.0/16")
        for c in cts:
            assert c.ip not in node_ips and ipaddress.IPv4Address(c.ip) in net
            off = int(ipaddress.IPv4Address(c.ip)) - int(net.network_address)
            assert off in (dc.network.services if c.service else dc.network.cts)
            assert seen.setdefault(c.ctid, c.ip) == c.ip, "a CT's address changed"
    store.close()
