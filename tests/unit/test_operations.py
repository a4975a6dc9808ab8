"""The operations layer (ctmanager/operations/): every operation's check refuses
bad input with one typed line and writes nothing, even on good input; and the
rules that used to live twice (in the inventory and in the move's flip) are one:
the rows a rack clears when a CT leaves it, the tombstone, addresses, route
targets. Each backend."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from ctmanager import validate as v
from ctmanager.dc import manifest
from ctmanager.dc.model import Resources
from ctmanager.errors import ConflictError, CtmError, ExhaustedError, InputError, NotFoundError
from ctmanager.operations import Context, Operation, inventory, rules
from ctmanager.operations import moves as moveops
from ctmanager.operations.cts import AddCt, PlaceCt, ResetCt, RmCt, SetCt
from ctmanager.operations.racks import InstallRack, SetDc, SetDrained
from ctmanager.operations.tenants import AddTenant, RmRoute, RmTenant, SetRealm, SetRoute
from ctmanager.reconcile.state import Action, Settings
from ctmanager.store import Store, backups, edits, queries, schema
from ctmanager.store import loop as persist
from ctmanager.store import moves as moverows
from tests.conftest import ROOT

Inv = inventory.Inventory


def dump(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (the change counter and the event log too)."""
    return {t: sorted((tuple(r) for r in store.query(f"SELECT * FROM {t}")), key=repr)  # noqa: S608
            for t in schema.tables()}


def change(inv: Inv, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    with inv.store.transaction():
        return fn(*args, **kw)


def rack(inv: Inv, slot: int) -> None:
    change(inv, inv.install_rack, slot, manifest.load(ROOT / f"templates/dc/manifests/rack-{slot}.toml", inv.dc),
           f"rack-{slot}")


@pytest.fixture
def dc2(inv: Inv) -> Inv:
    """The example DC with rack-102 (eu-west, like 101) and rack-201 (us-east)."""
    rack(inv, 102)
    rack(inv, 201)
    return inv


Make = Callable[[Resources], Operation[Any, Any]]
REFUSED: list[tuple[str, Make, type[CtmError], str]] = [
    ("ct add: unknown environment", lambda r: AddCt("x", 101, r, env="moon"), InputError, "unknown environment"),
    ("ct add: rack not installed", lambda r: AddCt("x", 105, r), NotFoundError, "rack-105 is not installed"),
    ("ct add: hostname of a pool", lambda r: AddCt("relay-101", 101, r), ConflictError, "name of a service pool"),
    ("ct add: a CTID given before", lambda r: AddCt("x", 101, r, ctid=1000), ConflictError, "CTID 1000"),
    ("ct add: tenant elsewhere", lambda r: AddCt("x", 102, r, tenant="myhost"), InputError, "lives in rack-101"),
    ("ct set: bad ADMST", lambda r: SetCt("myhost", admst="sideways"), InputError, "must be up or down"),
    ("ct reset: no such CT", lambda r: ResetCt("nothere"), NotFoundError, "no CT 'nothere'"),
    ("ct rm: a core CT", lambda r: RmCt("myhost"), ConflictError, "core CT"),
    ("ct rm: a route target", lambda r: RmCt("mailstore-101-1"), ConflictError, "target of route(s)"),
    ("ct move: HN of another rack", lambda r: PlaceCt("myhost", "hn-102-1"), InputError, "is in rack-102"),
    ("tenant add: unknown realm", lambda r: AddTenant("t9", 101, (), r, "mars"), InputError, "unknown realm"),
    ("tenant add: outside its realm", lambda r: AddTenant("t9", 201, (), r, "eu-west"), InputError,
     "cannot place it"),
    ("tenant add: exists", lambda r: AddTenant("acme", 101, (), r), ConflictError, "already exists"),
    ("tenant rm: no such tenant", lambda r: RmTenant("nobody"), NotFoundError, "no tenant 'nobody'"),
    ("tenant set: pin outside", lambda r: SetRealm("myhost", "us-east"), InputError, "cannot pin tenant myhost"),
    ("route set: no such target", lambda r: SetRoute("myhost", "smtp", "relay-999-1"), NotFoundError,
     "neither a CT nor a pool"),
    ("route set: another tenant's CT", lambda r: SetRoute("myhost", "smtp", "acme"), ConflictError, "--foreign"),
    ("route set: --foreign out of its realm", lambda r: SetRoute("initech", "mailstore", "mailstore-201-1", foreign=True),
     InputError, "route mailstore -> mailstore-201-1 refused (route target mailstore-201-1): tenant initech is pinned "
     "to realm 'eu-west', and rack-201 is in realm 'us-east'"),
    ("route set: a pool out of its realm", lambda r: SetRoute("initech", "smtp", "relay-201", foreign=True),
     InputError, "pinned to realm 'eu-west'"),
    ("route rm: no such route", lambda r: RmRoute("myhost", "nope"), NotFoundError, "has no route 'nope'"),
    ("rack install: not a slot", lambda r: InstallRack(999, (), "m"), InputError, "slot 999 is not a slot"),
    ("rack install: occupied", lambda r: InstallRack(101, (), "m"), ConflictError, "slot 101 is occupied"),
    ("hn drain: not an HN", lambda r: SetDrained("storage-101-4", True), InputError, "not an HN"),
    ("init: initialised", lambda r: SetDc("x", "x.toml"), ConflictError, "already initialised"),
    ("move: to its own rack", lambda r: moveops.StartMove("myhost", 101), InputError, "lives in rack-101 already"),
    ("move: outside its realm", lambda r: moveops.StartMove("initech", 201), InputError, "pinned to realm"),
    ("move: rack not installed", lambda r: moveops.StartMove("myhost", 105), NotFoundError, "is not installed"),
]


@pytest.mark.parametrize("what,op,kind,says", REFUSED, ids=[r[0] for r in REFUSED])
def test_a_check_refuses_with_one_typed_line_and_writes_nothing(
        dc2: Inv, what: str, op: Make, kind: type[CtmError], says: str) -> None:
    before = dump(dc2.store)
    with pytest.raises(kind, match=re.escape(says)) as exc:
        op(dc2.dc.defaults).check(Context(dc2.store, dc2.dc))  # outside a transaction: a write would stay
    assert "\n" not in str(exc.value)
    assert dump(dc2.store) == before


def test_flip_refuses_in_its_check_and_writes_nothing(dc2: Inv) -> None:
    m = change(dc2, moveops.begin, dc2.store, dc2.dc, "myhost", 102, 1.0)
    before = dump(dc2.store)
    ctx = Context(dc2.store, dc2.dc)
    with pytest.raises(ConflictError, match="the CTs are in rack-101 already"):
        moveops.Flip(m, forward=False).check(ctx)
    moved = replace(m, src=201)  # a record out of step with the CT rows
    with pytest.raises(ConflictError, match="is in rack-101, not rack-201"):
        moveops.Flip(moved, forward=True).check(ctx)
    assert dump(dc2.store) == before


def test_a_check_on_good_input_writes_nothing_and_execute_writes_what_it_found(dc2: Inv) -> None:
    ctx = Context(dc2.store, dc2.dc, lambda: 5.0)
    before = dump(dc2.store)
    found = AddCt("build-1", 101, dc2.dc.defaults, tenant="acme").check(ctx)
    tenant = AddTenant("globex", 102, ("jira",), dc2.dc.defaults).check(ctx)
    plan = moveops.StartMove("acme", 102).check(ctx)
    assert dump(dc2.store) == before  # the CTID counter too: nothing taken yet
    with dc2.store.transaction():
        ct = AddCt("build-1", 101, dc2.dc.defaults, tenant="acme").execute(ctx, found)
    assert ct == found.ct == queries.find_ct(dc2.store, "build-1")
    assert dc2.store.get_meta("next_ctid") == str(ct.ctid + 1)
    assert dict(tenant.routes) == {"mailstore": "mailstore-102-1", "smtp": "relay-102", "socks": "socks-102-1",
                                   "metrics": "metrics-102-1"}
    assert [c.hostname for c in plan.cts] == ["acme"] and plan.routes["smtp"] == ("relay-101", "relay-102")


# ---- one rule each ----------------------------------------------------------------
def seed_rack_rows(store: Store, ctid: int, slot: int) -> None:
    """What rack `slot`'s manager keeps about CT `ctid`: placed, observed, refused
    by an HN, in a crash loop, its restore point read."""
    hn, other = f"hn-{slot}-1", f"hn-{slot}-2"
    with store.transaction(config=False):
        persist.save_placements(store, {ctid: hn}, 10.0)
        persist.save_observed(store, [(ctid, hn, "UP", 1.0)], [], {}, slot)
        [(a, jid)] = persist.journal(store, [Action("start", ctid, other, "x")], 10.0, slot)
        persist.finish(store, jid, a, "rejected", "no room", 10.0, Settings(), slot)
        persist.mark_crash_loops(store, [(ctid, 3)], 10.0)
        backups.record(store, f"storage-{slot}-4", 3600.0, [(ctid, "a-1", 9.0)], 10.0)


def rows_of(store: Store, ctid: int) -> dict[str, int]:
    return {t: int(store.one(f"SELECT count(*) FROM {t} WHERE ct_id = ?", (ctid,))[0])  # noqa: S608
            for t in rules.LEAVE_RACK}


def test_a_ct_removed_or_moved_away_leaves_its_rack_by_one_rule(dc2: Inv) -> None:
    assert set(rules.LEAVE_RACK) == {"placements", "observed", "rejections", "crash_loops", "backup_points"}
    gone = change(dc2, dc2.add_ct, "tmp-1", 101, resources=dc2.dc.defaults)
    moved = queries.find_ct(dc2.store, "myhost")
    for ctid in (gone.ctid, moved.ctid):
        seed_rack_rows(dc2.store, ctid, 101)
        assert set(rows_of(dc2.store, ctid).values()) == {1}
    change(dc2, dc2.rm_ct, "tmp-1", purge=True)  # removed: the rejection goes too (it used to stay)
    m = change(dc2, moveops.begin, dc2.store, dc2.dc, "myhost", 102, 1.0)
    change(dc2, moveops.flip, dc2.store, dc2.dc, m, 2.0, True)  # moved away
    for ctid in (gone.ctid, moved.ctid):
        assert set(rows_of(dc2.store, ctid).values()) == {0}
    tombs = {r[0]: tuple(r[1:]) for r in dc2.store.query("SELECT ct_id, hostname, rack, purge FROM removed")}
    assert tombs[gone.ctid] == ("tmp-1", 101, 1) and tombs[moved.ctid] == ("myhost", 101, 0)
    back = moverows.open_of(dc2.store, "myhost")
    assert back is not None and back.flipped
    change(dc2, moveops.flip, dc2.store, dc2.dc, back, 3.0, False)  # and back: the tombstone follows
    assert tuple(dc2.store.one("SELECT rack, purge FROM removed WHERE ct_id = ?", (moved.ctid,))) == (102, 0)


def test_addresses_are_one_rule_for_new_cts_and_moved_ones(dc2: Inv) -> None:
    ctx = Context(dc2.store, dc2.dc)
    taken = set(queries.rack_ips(dc2.store, 102))
    a, b, s = rules.addresses(ctx, 102, (False, False, True))
    assert len({a, b, s}) == 3 and not {a, b, s} & taken
    assert a.startswith("10.102.4.") and b.startswith("10.102.4.") and s.startswith("10.102.2.")
    m = change(dc2, moveops.begin, dc2.store, dc2.dc, "myhost", 102, 1.0)
    m = change(dc2, moveops.flip, dc2.store, dc2.dc, m, 2.0, True)
    assert queries.find_ct(dc2.store, "myhost").ip == a == m.cts[0].dst_ip  # what a new CT would have got
    new = change(dc2, dc2.add_ct, "other", 101, resources=dc2.dc.defaults)
    assert new.ip != m.cts[0].src_ip  # its old address is kept for a rollback, by the same rule
    assert rules.addresses(ctx, 102, (False,)) == (b,)


def test_route_targets_are_one_rule_for_new_tenants_and_moved_ones(dc2: Inv) -> None:
    store = dc2.store
    assert rules.route_target(store, "relay", 102, pool=True) == "relay-102"
    assert rules.route_target(store, "relay", 102, pool=False) == "relay-102-1"  # ties: by name
    change(dc2, dc2.add_tenant, "globex", 102, (), dc2.dc.defaults)
    change(dc2, dc2.set_route, "globex", "smtp", "relay-102-1")
    assert rules.route_target(store, "relay", 102, pool=False) == "relay-102-2"  # the one fewer routes use
    change(dc2, dc2.set_route, "myhost", "smtp", "relay-101-2")  # a CT of the service, not its pool
    plan = moveops.prepare(store, dc2.dc, "myhost", 102)
    assert plan.routes["smtp"] == ("relay-101-2", "relay-102-2")  # was: the first by name, relay-102-1
    assert plan.routes["mailstore"] == ("mailstore-101-1", rules.route_target(store, "mailstore", 102, pool=False))
    with pytest.raises(NotFoundError, match="rack-102 has no nothing CT to route to"):
        rules.route_target(store, "nothing", 102, pool=False)


def test_the_store_clears_only_a_ct_s_state_tables() -> None:
    with pytest.raises(ValueError, match="not a table of a CT's state"):
        edits.clear_ct_rows(None, 1, ("cts",))  # type: ignore[arg-type]  # refused before any SQL


def test_an_operation_made_of_others_is_all_or_nothing(dc2: Inv) -> None:
    """A tenant whose core CT gets no CTID (refused in the nested AddCt's check, run
    from AddTenant's execute): the tenant row, written first, goes too."""
    with dc2.store.transaction():
        dc2.store.set_meta("next_ctid", str(v.MAX_CTID + 1))
    before = dump(dc2.store)
    with pytest.raises(ExhaustedError, match="no CTID left"):
        change(dc2, dc2.add_tenant, "globex", 102, (), dc2.dc.defaults)
    assert dump(dc2.store) == before


def test_a_freed_address_waits_until_the_hns_reported_its_ct_gone_or_the_quarantine_ran_out(dc2: Inv) -> None:
    a1 = change(dc2, dc2.add_ct, "a1", 101, resources=dc2.dc.defaults)
    change(dc2, dc2.rm_ct, "a1")
    a2 = change(dc2, dc2.add_ct, "a2", 101, resources=dc2.dc.defaults)
    assert a2.ip != a1.ip  # a1 may still run on an HN cut off from its manager
    now = dc2.store.now()
    assert [q[:3] for q in edits.quarantined(dc2.store, 101, now)] == [(a1.ip, a1.ctid, "a1")]
    assert edits.quarantined(dc2.store, 102, now) == []  # another rack's addresses are its own
    assert edits.quarantined(dc2.store, 101, now + dc2.dc.ip_quarantine + 1) == []  # the time is up
    change(dc2, dc2.store.execute, "DELETE FROM removed WHERE ct_id = ?", (a1.ctid,))  # every HN reported it gone
    a3 = change(dc2, dc2.add_ct, "a3", 101, resources=dc2.dc.defaults)
    assert a3.ip == a1.ip  # free again: the lowest free address, as before


def test_pinning_a_tenant_with_a_route_out_of_the_realm_is_refused(dc2: Inv) -> None:
    change(dc2, dc2.set_route, "myhost", "mailstore", "mailstore-201-1", foreign=True)  # not pinned: --foreign may
    before = dump(dc2.store)
    with pytest.raises(InputError, match=r"cannot pin tenant myhost to realm 'eu-west' \(route target "
                                         r"mailstore-201-1\): tenant myhost would be pinned .* rack-201 is in realm "
                                         r"'us-east'; point the route elsewhere first"):
        change(dc2, dc2.set_realm, "myhost", "eu-west")
    assert dump(dc2.store) == before
    change(dc2, dc2.set_route, "myhost", "mailstore", "mailstore-101-1")
    assert change(dc2, dc2.set_realm, "myhost", "eu-west") == ""  # its routes all in eu-west now: pinned
