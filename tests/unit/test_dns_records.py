"""The records the store implies, and the diff against what was published (pure)."""

from __future__ import annotations

import pytest

from ctmanager.dc.model import Ct, Node, Resources, Route
from ctmanager.dc.template import load as load_dc_template
from ctmanager.dnsroutes.records import RRset, absolute, desired, diff, zones
from ctmanager.errors import InputError
from tests.conftest import EXAMPLE

RES = Resources(1 << 30, 0, 10 << 30, 1, 1000, 100)


def ct(ctid: int, hostname: str, ip: str, tenant: str | None = None, service: str | None = None) -> Ct:
    return Ct(ctid, hostname, 101, tenant, service, "prod", ip, "storage-101-4", "UP", RES, ())


@pytest.fixture(scope="module")
def dc():  # type: ignore[no-untyped-def]
    return load_dc_template(EXAMPLE)


def test_addresses_pools_and_routing_cnames(dc) -> None:  # type: ignore[no-untyped-def]
    cts = [ct(1001, "relay-101-1", "10.101.2.2", service="relay"), ct(1002, "relay-101-2", "10.101.2.3", service="relay"),
           ct(1005, "myhost", "10.101.4.1", tenant="myhost")]
    nodes = [Node("hn-101-1", 101, 1, "hn", "compute", "S1", "52:54:00:00:00:01", "10.101.1.1")]
    routes = [Route("myhost", "smtp", "relay-101"), Route("myhost", "socks", "socks-101-1")]  # the CT is gone
    got = {str(rr) for rr in desired(dc, cts, nodes, routes, {"relay-101": ["relay-101-1", "relay-101-2"]}).values()}
    i, t = "rack-101.uc-inf.net.internal.", "example.net.internal."
    assert got == {
        f"relay-101-1.{i} 60 A 10.101.2.2", f"relay-101-2.{i} 60 A 10.101.2.3", f"myhost.{i} 60 A 10.101.4.1",
        f"hn-101-1.{i} 60 A 10.101.1.1",
        f"relay-101.{i} 60 A 10.101.2.2 10.101.2.3",  # a pool: one name, several addresses
        f"smtp.{i} 60 CNAME relay-101.{i}",  # the rack's own routing name, for CTs without a tenant
        f"s3.{i} 60 A 172.31.0.10",  # the cloud service of the peerings rack-101 uses (two links, one name)
        f"myhost.{t} 60 CNAME myhost.{i}",  # the tenant's own name -> its core CT
        f"smtp.myhost.{t} 60 CNAME relay-101.{i}",  # the route; socks points at nothing and publishes nothing
    }


def test_the_diff_adds_changes_and_deletes_only_what_differs() -> None:
    a, b = RRset("a.z.", "A", ("10.0.0.1",), 60), RRset("b.z.", "A", ("10.0.0.2",), 60)
    b2, c = RRset("b.z.", "A", ("10.0.0.3",), 60), RRset("c.z.", "CNAME", ("a.z.",), 60)
    have = {("a.z.", "A"): a, ("b.z.", "A"): b, ("c.z.", "CNAME"): c}
    want = {("a.z.", "A"): a, ("b.z.", "A"): b2, ("d.z.", "A"): RRset("d.z.", "A", ("10.0.0.4",), 60)}
    changes = diff(want, have)
    assert [(ch.name, ch.kind) for ch in changes] == [("b.z.", "change"), ("c.z.", "delete"), ("d.z.", "add")]
    assert str(changes[0]) == "~ b.z. 60 A 10.0.0.3 (was 10.0.0.2)"
    assert diff(want, want) == []


@pytest.mark.parametrize("name", ["a..b", "-a.b", "a_b.c", "x" * 64 + ".z", "a b", "a;rm -rf.z", ""])
def test_names_that_could_inject_or_break_a_zone_are_refused(name: str) -> None:
    with pytest.raises(InputError, match="not a valid DNS name"):
        absolute(name)


def test_zones_of_a_name(dc) -> None:  # type: ignore[no-untyped-def]
    z = zones(dc)
    assert z.of("smtp.myhost.example.net.internal.") == "example.net.internal."
    assert z.of("relay-101-1.rack-101.uc-inf.net.internal.") == "uc-inf.net.internal."
    with pytest.raises(InputError, match="none of the zones"):
        z.of("www.example.com.")
