"""Two racks on one store: what each rack's manager writes and clears is its own
(observed rows, tombstones, intents, rejections, DNS publication). Each backend."""

from __future__ import annotations

from ctmanager.dc import manifest
from ctmanager.operations import inventory
from ctmanager.reconcile.state import Action, Observed, Settings
from ctmanager.store import loop, queries
from tests.conftest import ROOT

RACK102 = ROOT / "templates/dc/manifests/rack-102.toml"


def two_racks(inv: inventory.Inventory) -> tuple[int, int]:
    """rack-102 beside the example's rack-101, a tenant CT in each; their CTIDs."""
    with inv.store.transaction():
        inv.install_rack(102, manifest.load(RACK102, inv.dc), str(RACK102))
        inv.add_tenant("globex", 102, (), inv.dc.defaults)
        a = queries.find_ct(inv.store, "acme").ctid
        g = queries.find_ct(inv.store, "globex").ctid
    return a, g


def test_each_rack_s_manager_touches_only_its_own_rows(inv: inventory.Inventory) -> None:
    store, dc, now, s = inv.store, inv.dc, 1000.0, Settings()
    a, g = two_racks(inv)
    with store.transaction(config=False):  # both racks' managers have written
        for slot, ctid, hn in ((101, a, "hn-101-1"), (102, g, "hn-102-1")):
            loop.save_observed(store, [(ctid, hn, "UP", 1.0)], [], {}, slot)
            loop.journal(store, [Action("start", ctid, hn, "not running")], now, slot)
            loop.save_placements(store, {ctid: hn}, now)
    jid = loop.journal  # the results: one rejection per rack
    with store.transaction(config=False):
        for slot, ctid, hn in ((101, a, "hn-101-2"), (102, g, "hn-102-2")):
            [(_, i)] = jid(store, [Action("start", ctid, hn, "x")], now, slot)
            loop.finish(store, i, Action("start", ctid, hn, "x"), "rejected", "no room", now, s, slot)
    # rack-101's manager restarts: a fresh observed view, its own interrupted intents
    with store.transaction(config=False):
        loop.save_observed(store, [], [], {}, 101, everything=True)
        lost = loop.interrupted(store, now, 101)
    assert [str(i) for i in lost] == [f"start {a} on hn-101-1"]
    assert [r[0] for r in store.query("SELECT ct_id FROM observed")] == [g]
    assert [r[0] for r in store.query("SELECT ct_id FROM journal WHERE state = 'pending'")] == [g]
    p101, p102 = loop.placements(store, now, 101), loop.placements(store, now, 102)
    assert p101.where == {a: "hn-101-1"} and p102.where == {g: "hn-102-1"}
    assert set(p101.rejected) == {(a, "hn-101-2")} and set(p102.rejected) == {(g, "hn-102-2")}
    # tombstones: each rack forgets only its own
    with store.transaction():
        inv.rm_tenant("acme")
        inv.rm_tenant("globex")
    c101, c102 = loop.configured(store, dc, 101), loop.configured(store, dc, 102)
    assert set(c101.removed) == {a} and set(c102.removed) == {g}
    every_hn_known = Observed()
    for hn in c101.hns:
        every_hn_known.received_at[hn] = now  # none of rack-101's HNs has either CT any more
    with store.transaction(config=False):
        forgot = loop.forget_removed(store, c101, every_hn_known, now, s, 101)
    assert forgot == [a]
    assert {r[0] for r in store.query("SELECT ct_id FROM removed")} == {g}  # rack-102's is its manager's


def test_each_rack_s_dns_worker_publishes_only_its_own_names(inv: inventory.Inventory) -> None:
    from ctmanager.dnsroutes import sync

    two_racks(inv)
    store = inv.store
    everything, _ = sync.pending(store)
    mine, owner = sync.pending(store, rack=102)
    assert mine and all(owner[c.name] == 102 for c in mine)
    assert {c.name for c in mine} < {c.name for c in everything}
    names = {c.name for c in mine}
    assert "globex.example.net.internal." in names  # the tenant goes with its core CT's rack
    assert any(n.startswith("hn-102-1.rack-102.") for n in names)
    assert not any(".rack-101." in n or n.startswith("acme.") for n in names)
    ours = {c.name for c in sync.pending(store, rack=101)[0]}
    assert ours | names == {c.name for c in everything} and not ours & names


def test_a_tombstone_of_unknown_rack_is_claimed_by_the_rack_that_has_the_ct_and_never_dropped_by_another(
        inv: inventory.Inventory) -> None:
    store, dc, now, s = inv.store, inv.dc, 1000.0, Settings()
    a, g = two_racks(inv)
    with store.transaction():
        inv.rm_tenant("globex")
    store.execute("UPDATE removed SET rack = 0")  # as a store from before v11 with two racks leaves it
    c101 = loop.configured(store, dc, 101)
    assert g in c101.removed  # unknown rack: every manager looks for it on its HNs
    nobody_has_it = Observed()
    for hn in c101.hns:
        nobody_has_it.received_at[hn] = now
    with store.transaction(config=False):
        loop.forget_removed(store, c101, nobody_has_it, now, s, 101)
    assert [tuple(r) for r in store.query("SELECT ct_id, rack FROM removed")] == [(g, 0)]  # not rack-101's to drop
    c102 = loop.configured(store, dc, 102)
    has_it = Observed()
    for hn in c102.hns:
        has_it.received_at[hn] = now
    has_it.where[g] = {"hn-102-1": "UP"}
    with store.transaction(config=False):
        loop.forget_removed(store, c102, has_it, now, s, 102)
    assert [tuple(r) for r in store.query("SELECT ct_id, rack FROM removed")] == [(g, 102)]  # claimed
    assert g not in loop.configured(store, dc, 101).removed


def test_status_of_one_rack_lists_only_its_cts(inv: inventory.Inventory) -> None:
    a, g = two_racks(inv)
    every = [r[0] for r in queries.status(inv.store)]
    assert a in every and g in every
    assert [r[0] for r in queries.status(inv.store, rack=102)] == [c.ctid for c in queries.cts(inv.store, rack=102)]
    assert a not in [r[0] for r in queries.status(inv.store, rack=102)]
    assert [r[0] for r in queries.status(inv.store, rack=101)] == [c.ctid for c in queries.cts(inv.store, rack=101)]
    assert queries.status(inv.store, rack=103) == []


def test_status_rack_option_names_a_missing_rack_in_one_line(example_store) -> None:
    import json

    rows = json.loads(example_store("status", "--rack", "rack-101", "--json").stdout)
    assert rows and all("-101" in r["hostname"] or r["tenant"] for r in rows)
    for bad, says in (("rack-109", "no rack-109 installed"), ("x;rm", "--rack")):
        p = example_store("status", "--rack", bad, check=False)
        assert p.returncode != 0 and says in p.stderr and p.stderr.count("\n") == 1 and not p.stdout, p.stderr
