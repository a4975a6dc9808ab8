"""Issue 35 (hardening, round 3), classes 1, 2, 7, 8: names and what an edit implies.

1. No CT or tenant takes a name of another kind (a routing name, a cloud service,
   a node's, a service CT's, a pool's: dc/names.py, one rule), at every entry point;
   and records.desired never settles two claims on a name by dropping one silently.
2. A refused command changed nothing; an accepted one leaves the DNS records
   computable (names fit DNS: 253 characters, said as such).
7. What the template accepts can be read back (one rule per value: slots, positions).
8. Zones that are one, or nest, are refused.
The grammar of names is property-tested (hypothesis); every entry point is shown
refusing with one line, exit 2, and the store unchanged."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctmanager import validate as v
from ctmanager.dc import names, template
from ctmanager.dc.model import Ct
from ctmanager.dnsroutes import records
from ctmanager.dnsroutes import sync as dnssync
from ctmanager.errors import ConflictError, InputError, StoreError
from ctmanager.operations import Context, inventory, run
from ctmanager.operations.cts import AddCt
from ctmanager.operations.racks import InstallRack
from ctmanager.operations.tenants import AddTenant, SetRoute
from ctmanager.store import edits, open_store, queries, rows
from tests.conftest import EXAMPLE, ROOT, Cli, dump, no_store

Inv = inventory.Inventory
DC = template.load(EXAMPLE)
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ---- the grammar: names of every kind, in any slot, and plain labels ------------------
ROUTING = sorted({s.route for s in DC.rack_services} | {c for p in DC.peerings for c, _ in p.services})
FAMILIES = sorted({s.hostname_prefix for s in DC.skus.values()} | {s.name for s in DC.rack_services})
numbers = st.integers(0, 99999).map(str)
shaped = st.one_of(
    st.sampled_from(ROUTING),
    st.builds(lambda f, a, b: f"{f}-{a}-{b}", st.sampled_from(FAMILIES), numbers, numbers),  # node, service CT
    st.builds(lambda f, a: f"{f}-{a}", st.sampled_from([s.name for s in DC.rack_services]), numbers),  # pool
)
labels = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True).filter(lambda s: not v.is_digits(s))


@given(shaped)
def test_every_name_of_another_kind_is_reserved_in_any_slot(name: str) -> None:
    assert v.is_label(name) and names.reserved(DC, name)
    with pytest.raises(ConflictError, match="choose another name"):
        names.ct_hostname(DC, name, "hostname")


@given(st.sampled_from([s for s in DC.rack_services]), st.integers(1, 255), st.integers(1, 64))
def test_a_rack_service_may_take_its_own_ct_names_and_nothing_else(svc: Any, slot: int, n: int) -> None:
    name = names.service_ct_name(svc.name, slot, n)
    assert names.reserved(DC, name, service=svc.name, rack=slot) == ""
    assert names.reserved(DC, name, service=svc.name, rack=slot % 255 + 1)  # not another rack's
    assert names.reserved(DC, name)  # not an ordinary CT's


@given(st.one_of(labels, shaped))
@PROPS
def test_a_name_is_refused_or_its_records_claim_no_name_twice(inv: Inv, name: str) -> None:
    """The property behind class 1: whatever `ct add` accepts publishes without a
    collision (checked strictly: records.desired refuses one), in the edit's own
    transaction, rolled back after."""
    class Rollback(Exception):
        pass

    try:
        with inv.store.transaction():
            inv.add_ct(name, 101, resources=inv.dc.defaults)
            dnssync.desired(inv.store)  # strict: a name claimed twice raises
            raise Rollback
    except Rollback:
        assert not names.reserved(inv.dc, name)
    except InputError as exc:  # refused before anything was written
        assert "claimed by" not in exc.message, exc.message


# ---- records: a name claimed twice is refused or reported, never dropped ---------------
RES = DC.defaults


def _ct(ctid: int, hostname: str, ip: str, service: str | None = None, tenant: str | None = None) -> Ct:
    return Ct(ctid, hostname, 101, tenant, service, "prod", ip, "storage-101-4", "UP", RES, ())


def test_records_refuse_or_report_a_name_two_kinds_claim() -> None:
    cts = [_ct(1004, "metrics-101-1", "10.101.2.5", service="metrics"),
           _ct(1008, "metrics", "10.101.4.4", tenant="metrics")]  # a store from before the rule
    with pytest.raises(InputError, match=r"metrics\.rack-101\.uc-inf\.net\.internal\. is claimed by rack "
                                         r"service metrics's routing name and by CT metrics"):
        records.desired(DC, cts, [], [], {})
    found: list[str] = []
    got = records.desired(DC, cts, [], [], {}, collisions=found)
    name = "metrics.rack-101.uc-inf.net.internal."
    assert got[name, "CNAME"].values == ("metrics-101-1.rack-101.uc-inf.net.internal.",)  # the rack's kept
    assert (name, "A") not in got and len(found) == 1 and "CT metrics" in found[0]


def test_a_long_name_is_said_to_be_long_not_a_long_label() -> None:
    name = ".".join(["a" * 61] * 4) + ".internal"  # 256 characters, every label short
    with pytest.raises(InputError, match="256 characters long; a DNS name has at most 253"):
        records.absolute(name)
    with pytest.raises(InputError, match="longer than 63"):
        records.absolute("b" * 64 + ".z")


# ---- the operations: refused in check, with the store unchanged ------------------------
def _rows(store: Any) -> str:
    return json.dumps([[tuple(r) for r in store.query(f"SELECT * FROM {t} ORDER BY 1")]  # noqa: S608
                       for t in ("cts", "tenants", "routes", "nodes", "racks", "events", "meta")], default=str)


REFUSED = [
    ("tenant metrics", lambda r: AddTenant("metrics", 101, (), r), "routing name of rack service metrics"),
    ("tenant smtp", lambda r: AddTenant("smtp", 101, (), r), "routing name of rack service relay"),
    ("tenant socks", lambda r: AddTenant("socks", 101, (), r), "routing name of rack service socks"),
    ("tenant mailstore", lambda r: AddTenant("mailstore", 101, (), r), "routing name of rack service mailstore"),
    ("ct s3", lambda r: AddCt("s3", 101, r), "cloud service s3"),
    ("ct of a later rack's node", lambda r: AddCt("hn-102-2", 101, r), "name of a node"),
    ("ct of a later rack's service", lambda r: AddCt("relay-102-1", 101, r), "rack service's CT"),
    ("ct of an uninstalled rack's pool", lambda r: AddCt("relay-116", 101, r), "service pool"),
    ("ct as another rack's service CT", lambda r: AddCt("relay-102-1", 101, r, service="relay"), "rack service's CT"),
    ("tenant of a storage node", lambda r: AddTenant("storage-101-3", 101, (), r), "name of a node"),
]


@pytest.mark.parametrize("what,make,says", REFUSED, ids=[r[0] for r in REFUSED])
def test_an_edit_taking_another_kind_s_name_is_refused_and_writes_nothing(inv: Inv, what: str, make: Any,
                                                                         says: str) -> None:
    before = _rows(inv.store)
    with pytest.raises(ConflictError, match=says) as exc, inv.store.transaction():
        run(Context(inv.store, inv.dc), make(inv.dc.defaults))
    assert "\n" not in str(exc.value) and _rows(inv.store) == before


def test_rack_install_checks_the_names_it_brings_against_the_store(inv: Inv) -> None:
    from ctmanager.dc import manifest

    with inv.store.transaction():  # a CT written before names were reserved
        edits.insert_ct(inv.store, _ct(4000, "hn-102-2", "10.101.4.200"), 1.0)
    nodes = manifest.load(ROOT / "templates/dc/manifests/rack-102.toml", inv.dc)
    before = _rows(inv.store)
    with pytest.raises(ConflictError, match="cannot install rack-102: it brings hn-102-2, and hostname 'hn-102-2' "
                                            "is already used by CT 4000"), inv.store.transaction():
        run(Context(inv.store, inv.dc), InstallRack(102, nodes, "m"))
    assert _rows(inv.store) == before


def _long_dc(tmp_path: Path, infra: str = "", tenant: str = "") -> Path:
    text = EXAMPLE.read_text()
    if infra:
        text = re.sub(r'(?m)^infra_zone = "[^"]*"', f'infra_zone = "{infra}"', text)
    if tenant:
        text = re.sub(r'(?m)^tenant_zone = "[^"]*"', f'tenant_zone = "{tenant}"', text)
    (tmp_path / "manifests").mkdir(exist_ok=True)
    for m in (EXAMPLE.parent / "manifests").iterdir():
        (tmp_path / "manifests" / m.name).write_text(m.read_text())
    (tmp_path / "t.toml").write_text(text)
    return tmp_path / "t.toml"


LONG = ".".join(["z" * 60] * 3) + ".internal"  # 192 characters: a hostname has room for 52 here


def test_a_hostname_too_long_for_dns_is_refused_by_length_in_every_rack(store_path: Any, tmp_path: Path) -> None:
    store = open_store(store_path, create=True)
    with store.transaction():
        dc = inventory.init(store, _long_dc(tmp_path, infra=LONG))
    inv = Inv(store, dc)
    before = _rows(store)
    with pytest.raises(InputError, match=r"256 characters long \(in rack-208, .*at most 253, so hostname has at "
                                         r"most 52 characters here") as exc, store.transaction():
        inv.add_ct("a" * 55, 101, resources=dc.defaults)
    assert "63" not in exc.value.message and _rows(store) == before
    with store.transaction():
        inv.add_ct("a" * 52, 101, resources=dc.defaults)  # the longest that fits: and it publishes
    assert dnssync.desired(store)


def test_a_tenant_or_route_name_too_long_for_the_tenant_zone_is_refused(store_path: Any, tmp_path: Path) -> None:
    store = open_store(store_path, create=True)
    with store.transaction():
        dc = inventory.init(store, _long_dc(tmp_path, tenant=".".join(["t" * 60] * 3)))
    ctx = Context(store, dc)
    with pytest.raises(InputError, match="so tenant has at most 51 characters here"):
        AddTenant("x" * 55, 101, (), dc.defaults).check(ctx)  # mailstore.<tenant>.<zone> would not fit
    with pytest.raises(InputError, match="so service has at most"):
        SetRoute("myhost", "s" * 63, "relay-101").check(ctx)


# ---- 7: what the template accepts reads back; one rule per value -----------------------
@pytest.mark.parametrize("length", [50, 55, 56, 60])
def test_a_hostname_prefix_the_template_accepts_reads_back(store_path: Any, tmp_path: Path, length: int) -> None:
    path = _long_dc(tmp_path)
    path.write_text(path.read_text().replace('hostname_prefix = "hn"', f'hostname_prefix = "{"h" * length}"'))
    try:
        template.load(path)
    except InputError as exc:
        assert length > 55 and "a DNS label has at most 63 (here it has at most 55)" in exc.message
        return
    store = open_store(store_path, create=True)
    with store.transaction():
        inventory.init(store, path)
    assert all(len(n.hostname) <= 63 for n in queries.nodes(store))  # the row checks read them back
    assert dnssync.desired(store)


def test_a_slot_is_1_to_255_everywhere() -> None:
    from ctmanager.wire import spec as wirespec

    for bad in (0, 256):
        with pytest.raises(InputError, match="between 1 and 255"):
            v.slot(bad, "rack")
    raw = wirespec.spec_for(_ct(1005, "myhost", "10.101.4.1"), DC)
    assert wirespec.parse(json.dumps({**raw, "rack": 255}).encode(), 1005).ct.rack == 255
    with pytest.raises(InputError, match="spec.rack"):
        wirespec.parse(json.dumps({**raw, "rack": 0}).encode(), 1005)
    row = {"ct_id": 1005, "rack": 256}
    with pytest.raises(StoreError, match="damaged store row"):
        rows.placed(row)  # type: ignore[arg-type]
    assert rows.placed({"ct_id": 1005, "rack": 255}) == (1005, 255)  # type: ignore[arg-type]


@pytest.mark.parametrize("slot,ok", [(0, False), (1, True), (255, True), (256, False)])
def test_ctagent_takes_the_slots_the_template_does(tmp_path: Path, slot: int, ok: bool) -> None:
    from ctmanager.agent import config as agentconfig
    from tests.conftest import agent_toml

    path = agent_toml(tmp_path)
    path.write_text(path.read_text().replace("rack = 101", f"rack = {slot}"))
    if ok:
        assert agentconfig.load(path).rack == slot
    else:
        with pytest.raises(InputError, match="rack: must be between 1 and 255"):
            agentconfig.load(path)


@pytest.mark.parametrize("old,new,where,says", [
    ("first = 101\n", "first = 0\n", "slots[0].first", "between 1 and 255"),
    ("count = 8\n", "count = 60\n", "slots[1].count", "past the last slot"),
    ('infra_zone = "uc-inf.net.internal"', 'infra_zone = "example.net.internal"', "dc.tenant_zone", "are one"),
    ('infra_zone = "uc-inf.net.internal"', 'infra_zone = "dc.example.net.internal"', "dc.tenant_zone", "inside"),
    ('infra_zone = "uc-inf.net.internal"', 'infra_zone = "net.internal"', "dc.tenant_zone", "inside"),
    ('infra_zone = "uc-inf.net.internal"', 'infra_zone = "inf.example.net"', "dc.tenant_zone", "inside"),
    ('hostname_prefix = "hn"', 'hostname_prefix = "relay"', "rack_services.relay", "would collide"),
    ('hostname_prefix = "hn"', 'hostname_prefix = "hn-2"', "skus.compute.hostname_prefix", "ends in"),
    ('route = "smtp"', 'route = "hn-1-1"', "rack_services.relay.route", "name of a node"),
    ('route = "smtp"', 'route = "mailstore-7"', "rack_services.relay.route", "service pool"),
    ('services = { s3 = "172.31.0.10" }             # routing', 'services = { relay-4 = "172.31.0.10" } #',
     "peerings.aws-vpc1-a.services.relay-4", "service pool"),
    ('name = "acme"', 'name = "metrics"', "tenants[1].name", "routing name of rack service metrics"),
    ('name = "acme"', 'name = "s3"', "tenants[1].name", "cloud service s3"),
    ('name = "acme"', 'name = "hn-102-1"', "tenants[1].name", "name of a node"),
])
def test_the_template_refuses_names_that_collide_or_do_not_fit(tmp_path: Path, old: str, new: str, where: str,
                                                              says: str) -> None:
    text = EXAMPLE.read_text()
    assert old in text
    (tmp_path / "t.toml").write_text(text.replace(old, new, 1))
    with pytest.raises(InputError, match=re.escape(says)) as exc:
        template.load(tmp_path / "t.toml")
    assert exc.value.where == f"{tmp_path / 't.toml'}: {where}"


def test_zones_that_overlap_are_refused_by_records_too() -> None:
    for infra in ("example.net.internal", "x.example.net.internal", "net.internal"):
        with pytest.raises(InputError, match="one lies inside the other"):
            records.zones(dataclasses.replace(DC, infra_zone=infra))


# ---- the CLI: one line, exit 2, the whole store unchanged ------------------------------
def _tsig(tmp_path: Path) -> Path:
    key = tmp_path / "tsig.key"
    key.write_text(f'key "ctmanager" {{ algorithm hmac-sha256; secret "{base64.b64encode(b"k" * 32).decode()}"; }};\n')
    key.chmod(0o600)
    return key


def test_the_cli_refuses_every_shadowing_name_before_commit(example_store: Cli, store_path: Any,
                                                           tmp_path: Path) -> None:
    """With a DNS server configured (one that is down): `ct add s3` used to commit,
    then fail its publish with exit 2, and every later edit and `dns diff` with it."""
    example_store("dns", "configure", "--server", "127.0.0.1:9", "--key-file", str(_tsig(tmp_path)))
    before, status = dump(store_path), example_store("status", "--json").stdout
    for argv in (("tenant", "add", "metrics"), ("tenant", "add", "smtp"), ("tenant", "add", "socks"),
                 ("tenant", "add", "mailstore"), ("ct", "add", "s3"), ("ct", "add", "hn-102-2"),
                 ("ct", "add", "mailstore-102-1"), ("tenant", "add", "relay-101")):
        got = example_store(*argv, "--rack", "101", check=False)
        assert got.returncode == 2, (argv, got.stderr)
        assert got.stderr.count("\n") == 1 and "Traceback" not in got.stderr and "choose another name" in got.stderr
    assert dump(store_path) == before and example_store("status", "--json").stdout == status
    assert example_store("dns", "diff").returncode == 0
    example_store("rack", "install", "rack-102", str(ROOT / "templates/dc/manifests/rack-102.toml"))


def test_dns_diff_reports_a_collision_from_an_old_store_and_edits_go_on(example_store: Cli, store_path: Any) -> None:
    store = open_store(store_path)
    with store.transaction():  # what an older ctmanager let through
        edits.insert_ct(store, _ct(4000, "s3", "10.101.4.200"), 1.0)
    store.close()
    diff = example_store("dns", "diff")
    assert "! COLLISION s3.rack-101.uc-inf.net.internal. is claimed by cloud service s3 and by CT s3" in diff.stdout
    assert "+ s3.rack-101.uc-inf.net.internal. 60 A 172.31.0.10" in diff.stdout  # the cloud's name is kept
    example_store("ct", "add", "build-1", "--rack", "101")  # one bad row does not stop every edit


def test_a_store_whose_template_tenant_took_a_name_reserved_since_still_opens(example_store: Cli,
                                                                              store_path: Any) -> None:
    store = open_store(store_path)
    with store.transaction():  # a store an older ctmanager initialised with a tenant named `metrics`
        store.set_meta("template", queries.template_text(store).replace('name = "acme"', 'name = "metrics"'))
    store.close()
    assert "acme " in example_store("tenant", "list").stdout  # it opens: those tenants are its rows now
    got = example_store("tenant", "add", "socks", "--rack", "101", check=False)
    assert got.returncode == 2 and "routing name of rack service socks" in got.stderr  # new names are held to it
    with pytest.raises(InputError, match="tenants\\[1\\].name"):  # the same text as a new template is refused
        template.loads(queries.template_text(open_store(store_path)).encode(), "t.toml", ROOT)


def test_init_refuses_a_template_whose_names_collide_and_makes_no_store(cli: Cli, store_path: Any,
                                                                       tmp_path: Path) -> None:
    path = _long_dc(tmp_path)
    path.write_text(path.read_text().replace('name = "acme"', 'name = "metrics"'))
    got = cli("init", str(path), check=False)
    assert got.returncode == 2 and got.stderr.count("\n") == 1 and "tenants[1].name" in got.stderr
    assert no_store(store_path)


def test_a_node_position_the_manifest_accepts_reads_back(store_path: Any, tmp_path: Path) -> None:
    """Positions: at most the template's nodes range (here 1,020), and the store's row check the same rule."""
    from ctmanager.dc import manifest

    path = _long_dc(tmp_path)
    path.write_text(path.read_text().replace('nodes = "1.1-1.254"', 'nodes = "1.1-4.254"')
                    .replace('services = "2.1-3.254"', 'services = "5.1-5.254"')
                    .replace('cts = "4.1-255.254"', 'cts = "6.1-255.254"'))
    (tmp_path / "m.toml").write_text((ROOT / "templates/dc/manifests/rack-102.toml").read_text()
                                     .replace("position = 3", "position = 1001", 1))
    store = open_store(store_path, create=True)
    with store.transaction():
        dc = inventory.init(store, path)
        Inv(store, dc).install_rack(102, manifest.load(tmp_path / "m.toml", dc), "m.toml")
    assert 1001 in [n.position for n in queries.nodes(store, rack=102)]
