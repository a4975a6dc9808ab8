"""Tenant moves in the store: the move's record (store/moves.py) stepped by the
pure machine as the leaders' loops step it (`Loop`, below: the racks' leaders
and the storage nodes are played by the test), the certificates and the
journal's re-check (store/moveacks.py, store/loop.journal), the realm rules, and
rsync's --stats parser on real rsync output. The machine alone is in
test_move_machine.py, the release verdict in test_release.py; the lab test
(tests/integration/test_move.py) moves tenants for real."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ctmanager.dc import manifest
from ctmanager.errors import ConflictError, InputError
from ctmanager.operations import inventory
from ctmanager.operations import moves as moveops
from ctmanager.reconcile import release
from ctmanager.reconcile.movesteps import advance
from ctmanager.reconcile.moving import Advance, Effect, EffectKind, Facts, Move, Outcome
from ctmanager.reconcile.plan import plan
from ctmanager.reconcile.state import Action, Observed, Placements, Settings
from ctmanager.storagenode import rsync
from ctmanager.store import loop as persist
from ctmanager.store import moveacks, moves, queries
from ctmanager.wire.reports import CtState, Metrics, Report

ROOT = Path(__file__).resolve().parents[2]
DST_NODE = "storage-102-3"


def change(inv: inventory.Inventory, fn, *args, **kw):
    with inv.store.transaction():
        return fn(*args, **kw)


def two_racks(inv: inventory.Inventory) -> inventory.Inventory:
    """The example DC with rack-102 (eu-west, like 101) and rack-201 (us-east)."""
    for slot, name in ((102, "rack-102"), (201, "rack-201")):
        nodes = manifest.load(ROOT / f"templates/dc/manifests/{name}.toml", inv.dc)
        change(inv, inv.install_rack, slot, nodes, name)
    return inv


@pytest.fixture
def dc2(inv: inventory.Inventory) -> inventory.Inventory:
    return two_racks(inv)


def started(inv: inventory.Inventory, **kw) -> Move:
    return change(inv, moveops.begin, inv.store, inv.dc, "myhost", 102, inv.store.now(), **kw)


class Loop:
    """The leaders' loops (manager/workflows.py) on the real store. Rack m.dst's
    leader steps the move with advance() and writes each answer in one
    transaction (a new hold: seen from the next configuration version, the rack's
    old certificate forgotten; a flip); the leader of the rack holding the tenant
    certifies it from its journal (the stops it asks for are journaled and done at
    once). Storage nodes: (node, CTID) -> what that /data holds, and the seals. The
    tenant is online where its CTs are configured, not held, not sealed, if `up`."""

    def __init__(self, inv: inventory.Inventory, epoch: int = 3) -> None:
        self.inv, self.store, self.epoch = inv, inv.store, epoch
        self.now = inv.store.now()
        self.leaders = {101, 102}
        self.certifying = {101, 102}  # leaders whose configuration shows the hold already
        self.up = True
        self.fail = ""  # every copy fails so
        self.stall_pulls = False  # the final batch lands its seals, then its runner dies (no outcome)
        ct = queries.find_ct(inv.store, "myhost")
        self.data = {(ct.storage, ct.ctid): "written at rack-101"}
        self.sealed: set[tuple[str, int]] = set()
        self.trail: list[Effect | tuple[str, bool]] = []

    def online(self, m: Move) -> str:
        here = {c.ctid: c.rack for c in queries.cts(self.store, tenant=m.tenant)}
        if self.up and not m.hold and all(here[c] == m.rack for _, c in m.side(m.rack)) \
                and not self.sealed & set(m.side(m.rack)):
            return ""
        return f"not UP in rack-{m.rack} yet"

    def certify(self, m: Move) -> None:
        rack, ctids = m.rack, [c.ctid for c in m.cts]
        if not m.hold or rack not in self.leaders & self.certifying:
            return

        def look() -> release.Verdict:
            return release.verdict(ctids, moveacks.intents(self.store, ctids, rack), {}, frozenset(), set(),
                                   self.epoch, self.now, 60.0)
        v = look()
        with self.store.transaction(config=False):
            for a, jid in persist.journal(self.store, v.stops, self.now, rack, self.epoch):
                persist.finish(self.store, jid, a, "done", f"stopped CT {a.ctid}", self.now, Settings(), rack)
        v = look() if v.stops else v
        with self.store.transaction(config=False):
            moveacks.certify(self.store, m, rack, self.epoch, self.store.config_version(), v.released, v.why,
                             self.now)

    def write(self, m: Move, a: Advance) -> Move:
        changes = dict(a.changes)
        with self.store.transaction(config=a.config):
            if changes.get("hold") is True:
                changes["hold_version"] = self.store.config_version() + 1
                moveacks.forget(self.store, m.id, m.rack)
            moves.record_sizes(self.store, m, a.sizes)
            m = moves.update(self.store, m, self.now, a.say, **changes) if changes or a.say else m
            if a.flip is not None:
                m = moveops.flip(self.store, self.inv.dc, m, self.now, forward=a.flip)
                self.trail.append(("flip", a.flip))
        return m

    def effects(self, effects: tuple[Effect, ...]) -> Outcome | None:
        """The batch kind by kind, as the storage port runs it: seals land before a
        failing pull does (None: the runner died before the pulls ended)."""
        stall = self.stall_pulls and any(e.kind == EffectKind.SEAL for e in effects)  # the final batch
        if (self.fail or stall) and any(e.kind == EffectKind.PULL for e in effects):
            self.effects(tuple(e for e in effects if e.kind != EffectKind.PULL))
            return None if stall else Outcome(False, self.fail)
        for e in effects:
            self.trail.append(e)
            at = (e.node, e.ctid)
            if e.kind == EffectKind.PULL:
                self.data[at] = self.data[e.source, e.ctid]
            elif e.kind == EffectKind.SEAL:
                self.sealed.add(at)
            elif e.kind == EffectKind.UNSEAL:
                self.sealed.discard(at)
            else:
                self.data.pop(at, None)
                self.sealed.discard(at)
        return Outcome(True, delta=1 << 10, took=0.1,
                       sizes=tuple((e.ctid, 1 << 10, 1) for e in effects if e.kind == EffectKind.PULL))

    def facts(self, m: Move, outcome: Outcome | None) -> Facts:
        return Facts(self.now, self.epoch, moveacks.release_of(self.store, m.id, m.rack), self.online(m), "",
                     outcome, stop_timeout=60.0, start_timeout=60.0)

    def step(self, m: Move) -> Move:
        self.now += 1.0
        self.certify(m)
        if m.dst not in self.leaders:
            return m
        a = advance(m, self.facts(m, None))
        m = self.write(m, a)
        if a.effects:  # done at once: their outcome is the next look's
            outcome = self.effects(a.effects)
            if outcome is not None:
                m = self.write(m, advance(m, self.facts(m, outcome)))
        return m

    def run(self, m: Move, until: Callable[[Move], bool] = lambda m: False, rounds: int = 30) -> Move:
        for _ in range(rounds):
            if not m.open or until(m):
                break
            m = self.step(m)
        return m


def test_a_move_copies_holds_seals_flips_and_deletes_the_source_copy(dc2: inventory.Inventory) -> None:
    before = queries.find_ct(dc2.store, "myhost")
    loop = Loop(dc2)
    with dc2.store.transaction(config=False):  # rack-101 started it there once
        for a, jid in persist.journal(dc2.store, [Action("start", before.ctid, "hn-101-1", "not running")],
                                      loop.now - 100, 101, loop.epoch):
            persist.finish(dc2.store, jid, a, "done", "started", loop.now - 99, Settings(), 101)
    loop.leaders = {102}  # no leader in rack-101: nobody lets the tenant go
    m = loop.run(started(dc2), rounds=5)
    assert (m.phase, m.step, m.hold) == ("cutover", "stop", True) and moves.held(dc2.store) == {"myhost"}
    # sealed as the hold began, while nobody has let it go yet: the final copy waits, the CT stays configured here
    assert loop.sealed == {(before.storage, before.ctid)} and queries.find_ct(dc2.store, "myhost").rack == 101
    loop.leaders = {101, 102}
    m = loop.run(m, until=lambda m: m.step == "start")
    assert [tuple(r) for r in dc2.store.query("SELECT kind, hn, state FROM journal WHERE rack = 101 ORDER BY id")] \
        == [("start", "hn-101-1", "done"), ("stop", "hn-101-1", "done")]  # the stop that proved it down
    assert moveacks.release_of(dc2.store, m.id, 101).released
    assert loop.sealed == {(before.storage, before.ctid)}  # sealed before the final copy
    m = loop.run(m)
    assert m.phase == "done", m.log
    after = queries.find_ct(dc2.store, "myhost")
    assert (after.ctid, after.rack, after.storage) == (before.ctid, 102, DST_NODE)
    assert after.ip.startswith("10.102.4.") and queries.tenant_rack(dc2.store, "myhost") == 102
    routes = {x.service: x.target for x in queries.routes(dc2.store, tenant="myhost")}
    assert routes == {"mailstore": "mailstore-102-1", "smtp": "relay-102", "socks": "socks-102-1",
                      "metrics": "metrics-102-1"}
    assert loop.data == {(DST_NODE, before.ctid): "written at rack-101"}  # deleted after online, seal and all
    assert not loop.sealed and m.downtime is not None and m.downtime > 0 and m.error == ""
    tomb = dc2.store.one("SELECT rack, purge FROM removed WHERE ct_id = ?", (before.ctid,))
    assert tuple(tomb) == (101, 0)  # rack-101's HNs drop the CT's config, /data kept there until delete


def test_keep_source_rests_online_until_asked(dc2: inventory.Inventory) -> None:
    loop = Loop(dc2)
    m = loop.run(started(dc2, keep_source=True))
    assert (m.phase, m.open) == ("online", True)
    ct = queries.find_ct(dc2.store, "myhost")
    assert len(loop.data) == 2
    with pytest.raises(ConflictError, match="too late to abort"):
        change(dc2, moves.ask_abort, dc2.store, m, 0.0)
    m = change(dc2, moves.update, dc2.store, m, dc2.store.now(), "asked", keep_source=False)
    assert loop.run(m).phase == "done" and list(loop.data) == [(ct.storage, ct.ctid)]


@pytest.mark.parametrize("when", ["copy", "final", "start", "abort"])
def test_a_failure_before_online_rolls_back_to_the_source_unchanged(dc2: inventory.Inventory, when: str) -> None:
    before = queries.find_ct(dc2.store, "myhost")
    routes = queries.routes(dc2.store, tenant="myhost")
    loop = Loop(dc2)
    m = started(dc2)
    if when == "copy":
        loop.fail = "target storage full: No space left on device"
    if when == "final":
        m = loop.run(m, until=lambda m: m.step == "seal")
        loop.fail = "rsync was killed (exit 20)"
    if when == "start":  # flipped, never UP there: the way back is a cutover, the destination's writes kept
        loop.up = False
        m = loop.run(m, until=lambda m: m.step == "start")
        loop.data[DST_NODE, before.ctid] = "written at rack-102"
        loop.now += 100
        loop.certifying = {101}  # nothing flips back before rack-102's leader lets the tenant go
        m = loop.run(m, rounds=5)
        assert (m.phase, m.step, m.flipped, m.hold) == ("rollback", "stop", True, True)
        assert queries.find_ct(dc2.store, "myhost").rack == 102 and (DST_NODE, before.ctid) in loop.sealed
        loop.certifying, loop.up = {101, 102}, True
    if when == "abort":
        m = loop.step(m)
        m = change(dc2, moves.ask_abort, dc2.store, m, dc2.store.now())
    m = loop.run(m)
    assert m.phase == "rolled-back", m.log
    assert m.error and (when != "abort" or m.error == "aborted by ops"), m.error
    assert queries.find_ct(dc2.store, "myhost") == before  # rack, address, storage as they were
    assert queries.routes(dc2.store, tenant="myhost") == routes
    assert loop.data == {(before.storage, before.ctid): "written at rack-102" if when == "start" else
                         "written at rack-101"}  # the partial copy is gone; nothing written anywhere lost
    assert not loop.sealed and moves.held(dc2.store) == set()
    if when == "start":
        flip_back = loop.trail.index(("flip", False))
        assert [e.kind for e in loop.trail[:flip_back] if isinstance(e, Effect)][-3:] == \
            [EffectKind.SEAL, EffectKind.PULL, EffectKind.UNSEAL]  # copied back before the flip back


def test_held_cts_count_as_admst_down_in_their_rack(dc2: inventory.Inventory) -> None:
    ct = queries.find_ct(dc2.store, "myhost")
    m = started(dc2)
    assert persist.configured(dc2.store, dc2.dc, 101).cts[ct.ctid].admst == "UP"
    change(dc2, moves.update, dc2.store, m, 1.0, "", hold=True)
    cfg = persist.configured(dc2.store, dc2.dc, 101)
    assert cfg.cts[ct.ctid].admst == "DOWN" and cfg.held == {ct.ctid}
    obs = Observed()
    obs.update(Report(101, "hn-101-1", "boot", 1, 1.0, False, Metrics(0.0, 0, 0, 0, 0, 0),
                      (CtState(ct.ctid, "UP", 1.0),)), 1.0)
    stops = plan(cfg, obs, Placements({ct.ctid: "hn-101-1"}), 1.5).actions
    assert [(a.kind, a.reason) for a in stops if a.ctid == ct.ctid] == [
        ("stop", "held down: its tenant's move is in its cutover")]  # the log says why, not "ADMST DOWN"
    assert queries.find_ct(dc2.store, "myhost").admst == "UP"  # what ops set is untouched


def test_an_open_move_refuses_edits_of_the_tenant_and_a_second_move(dc2: inventory.Inventory) -> None:
    started(dc2)
    with pytest.raises(ConflictError, match="is being moved"):
        started(dc2)
    with pytest.raises(ConflictError, match="is being moved"):
        change(dc2, dc2.rm_tenant, "myhost")
    with pytest.raises(ConflictError, match="is being moved"):
        change(dc2, dc2.add_ct, "myhost-db", 101, resources=dc2.dc.defaults, tenant="myhost")


def test_addresses_an_open_move_may_give_back_are_not_handed_out(dc2: inventory.Inventory) -> None:
    ct = queries.find_ct(dc2.store, "myhost")
    m = Loop(dc2).run(started(dc2), until=lambda m: m.flipped)
    assert m.open and queries.find_ct(dc2.store, "myhost").rack == 102
    new = change(dc2, dc2.add_ct, "other", 101, resources=dc2.dc.defaults)
    assert new.ip != ct.ip  # myhost's old address stays free for a rollback


def test_realms_refuse_placement_and_moves_outside(dc2: inventory.Inventory) -> None:
    assert dc2.dc.realm_of(101) == "eu-west" and dc2.dc.realm_of(201) == "us-east"
    assert moves.tenant_realm(dc2.store, "initech") == "eu-west"  # from the example template
    with pytest.raises(InputError, match="pinned to realm 'eu-west', and rack-201 is in realm 'us-east'"):
        change(dc2, moveops.begin, dc2.store, dc2.dc, "initech", 201, 0.0)
    assert moves.listing(dc2.store) == []  # nothing recorded, nothing copied
    with pytest.raises(InputError, match="cannot place it"):
        change(dc2, dc2.add_tenant, "euco", 201, (), dc2.dc.defaults, "eu-west")
    with pytest.raises(InputError, match="unknown realm 'mars'"):
        change(dc2, dc2.set_realm, "myhost", "mars")
    with pytest.raises(InputError, match="cannot pin tenant myhost to realm 'us-east'"):
        change(dc2, dc2.set_realm, "myhost", "us-east")
    assert change(dc2, dc2.set_realm, "myhost", "eu-west") == ""
    assert started(dc2).dst == 102  # eu-west to eu-west is fine
    assert change(dc2, moveops.begin, dc2.store, dc2.dc, "acme", 201, 0.0).dst == 201  # unpinned: anywhere


@pytest.mark.parametrize("text,got", [
    ("Number of files: 10,001 (reg: 10,000, dir: 1)\nNumber of created files: 0\n"
     "Number of regular files transferred: 103\nTotal file size: 1,073,741,824 bytes\n"
     "Total transferred file size: 10,799,104 bytes\nLiteral data: 10,799,104 bytes\n",
     rsync.Stats(10001, 103, 1073741824, 10799104, 10799104)),
])
def test_rsync_stats_are_parsed(text: str, got: rsync.Stats) -> None:
    assert rsync.parse_stats(text) == got
    with pytest.raises(rsync.RsyncStatsError):
        rsync.parse_stats("rsync error: some files could not be transferred")


def test_rsync_stats_of_a_real_rsync(tmp_path: Path) -> None:
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed (bash scripts/setup.sh)")
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(b"x" * 1000 * (i + 1))
    argv = rsync.pull_argv("rsync", str(src), str(dst), ssh=["ssh"], bwlimit=0, timeout=30)
    argv.remove("--rsh=ssh")  # local: the same options, no ssh
    first = rsync.parse_stats(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    assert (first.files_transferred, first.bytes, first.total_bytes) == (5, 15000, 15000)
    (src / "f0").write_bytes(b"y" * 1000)  # same size, rewritten: the nanosecond mtime tells
    (src / "f1").unlink()
    again = rsync.parse_stats(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    assert (again.files_transferred, again.bytes) == (1, 1000)
    assert (dst / "f0").read_bytes() == b"y" * 1000 and not (dst / "f1").exists()


def test_rsync_failures_read_as_one_line() -> None:
    assert rsync.failure(11, "rsync: write failed: No space left on device (28)\n").startswith("target storage full")
    assert "killed" in rsync.failure(20, "rsync error: received SIGINT, SIGTERM, or SIGHUP (code 20)")
    assert rsync.failure(255, "Host key verification failed.\n").startswith("ssh to the source storage node failed")
    with pytest.raises(ValueError):
        rsync.pull_argv("rsync", "a:/x", "/y", ssh=["ssh", "-i", "/a b"], bwlimit=0, timeout=10)


def test_an_abort_with_no_destination_manager_releases_the_tenant_at_once(dc2: inventory.Inventory) -> None:
    m = change(dc2, moves.update, dc2.store, started(dc2), 1.0, "", phase="cutover", step="stop", hold=True)
    assert moves.held(dc2.store) == {"myhost"}
    m = change(dc2, moves.ask_abort, dc2.store, m, 2.0, runner_alive=False)
    assert (m.phase, m.open, m.error) == ("rolled-back", False, "aborted by ops")
    assert moves.held(dc2.store) == set() and DST_NODE in m.log[-1]
    assert started(dc2).open  # the tenant is free again: a new move may begin


@pytest.mark.parametrize("how", ["abort", "overdue"])
def test_a_sealed_source_released_without_its_runner_is_unsealed_when_it_comes_back(
        dc2: inventory.Inventory, how: str) -> None:
    """Only the runner's token lifts the seal: the move stays open until it is back."""
    loop = Loop(dc2)
    loop.stall_pulls = True  # the seal landed, the final pull never returned
    m = loop.run(started(dc2), until=lambda m: bool(loop.sealed))
    loop.stall_pulls = False
    ct = queries.find_ct(dc2.store, "myhost")
    assert loop.sealed == {(ct.storage, ct.ctid)} and m.sealed
    loop.leaders = {101}  # rack-102's manager is gone
    if how == "abort":
        m = change(dc2, moves.ask_abort, dc2.store, m, loop.now, runner_alive=False)
    else:
        (m,) = change(dc2, moves.release_overdue, dc2.store, 101, m.deadline + 31, 30.0, lambda: {101})
    assert (m.phase, m.step, m.hold, m.open) == ("rollback", "unseal", False, True)
    assert moves.held(dc2.store) == set() and loop.online(m) != ""  # released, but sealed: it cannot start yet
    loop.leaders = {101, 102}
    m = loop.run(m)
    assert m.phase == "rolled-back" and m.log[-2].endswith("online again in rack-101"), m.log
    assert not loop.sealed and list(loop.data) == [(ct.storage, ct.ctid)]


def test_a_hold_whose_destination_vanished_is_released_by_the_source_past_its_deadline(
        dc2: inventory.Inventory) -> None:
    m = change(dc2, moves.update, dc2.store, started(dc2), 1.0, "", phase="cutover", step="final", hold=True,
               held_at=100.0, deadline=160.0)
    assert change(dc2, moves.release_overdue, dc2.store, 101, 185.0, 30.0, lambda: set()) == []  # not yet
    assert change(dc2, moves.release_overdue, dc2.store, 101, 195.0, 30.0, lambda: {102}) == []  # 102 leads
    assert change(dc2, moves.release_overdue, dc2.store, 102, 195.0, 30.0, lambda: set()) == []  # not its rack's
    (m,) = change(dc2, moves.release_overdue, dc2.store, 101, 195.0, 30.0, lambda: set())
    assert (m.phase, m.step, m.hold, m.flipped) == ("rollback", "unseal", False, False)
    assert moves.held(dc2.store) == set() and "gone mid-cutover" in m.error


def test_its_cts_are_not_edited_while_the_move_is_open_and_are_once_it_is_online(dc2: inventory.Inventory) -> None:
    before = queries.find_ct(dc2.store, "myhost")
    m = started(dc2, keep_source=True)
    snapshot = [tuple(r) for r in dc2.store.query("SELECT * FROM cts ORDER BY 1")]
    for edit in (lambda: dc2.set_ct("myhost", admst="DOWN"), lambda: dc2.reset_ct("myhost"),
                 lambda: dc2.set_ct("myhost", apps=["jira"])):
        with pytest.raises(ConflictError, match=r"being moved to rack-102 \(move \d+, copy\); wait for it or abort"):
            edit()
    assert [tuple(r) for r in dc2.store.query("SELECT * FROM cts ORDER BY 1")] == snapshot  # nothing changed
    m = Loop(dc2).run(m)
    assert (m.phase, m.open) == ("online", True)  # the source copy kept: the move stays open
    assert dc2.set_ct("myhost", admst="DOWN").admst == "DOWN"  # it runs at the destination like any CT
    assert dc2.reset_ct("myhost")[0].ctid == before.ctid
