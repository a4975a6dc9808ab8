"""Tenant moves: the store's record (store/moves.py), the workflow's steps
(manager/mover.py) with the racks' facts and the storage nodes played by the
test, the realm rules, and rsync's --stats parser on real rsync output. The lab
test (tests/integration/test_move.py) moves tenants for real."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ctmanager.dc import manifest
from ctmanager.dc.model import Ct
from ctmanager.errors import ConflictError, InputError
from ctmanager.executor.storage import DataInfo, Pulled, StorageFailed
from ctmanager.manager.config import MoveSettings
from ctmanager.manager.mover import MoveRunner
from ctmanager.reconcile.plan import plan
from ctmanager.reconcile.state import Observed, Placements, Settings
from ctmanager.storagenode import rsync
from ctmanager.store import inventory, moves, queries
from ctmanager.store import loop as persist
from ctmanager.wire.reports import CtState, Metrics, Report

ROOT = Path(__file__).resolve().parents[2]


def change(inv: inventory.Inventory, fn, *args, **kw):
    with inv.store.transaction():
        return fn(*args, **kw)


@pytest.fixture
def dc2(inv: inventory.Inventory) -> inventory.Inventory:
    """The example DC with rack-102 (eu-west, like 101) and rack-201 (us-east)."""
    for slot, name in ((102, "rack-102"), (201, "rack-201")):
        nodes = manifest.load(ROOT / f"templates/dc/manifests/{name}.toml", inv.dc)
        change(inv, inv.install_rack, slot, nodes, name)
    return inv


class FakeStorage:
    """Storage nodes as dicts: node -> {CTID: bytes}; `fail` makes a pull fail."""

    def __init__(self, data: dict[str, dict[int, int]]) -> None:
        self.data = data
        self.fail = ""
        self.grow = 0  # bytes each CT's source copy gains between passes (the tenant writes)
        self.free = 1 << 40
        self.calls: list[tuple[str, ...]] = []

    def info(self, node: str, ctid: int) -> DataInfo:
        size = self.data.setdefault(node, {}).get(ctid)
        return DataInfo(f"/export/data/{ctid}", size is not None, size or 0, 1, self.free)

    def pull(self, node: str, ctid: int, source: str, path: str, bwlimit: int, timeout: float) -> Pulled:
        self.calls.append(("pull", node, str(ctid), source))
        if self.fail:
            raise StorageFailed(self.fail)
        have = self.data.setdefault(node, {}).get(ctid, 0)
        src = self.data[source][ctid]
        self.data[node][ctid] = src
        self.data[source][ctid] = src + self.grow
        return Pulled(src - have if src > have else 0, 1, src, 1, 0.1)

    def cancel(self, node: str, ctid: int) -> bool:
        self.calls.append(("cancel", node, str(ctid)))
        return False

    def remove(self, node: str, ctid: int) -> bool:
        self.calls.append(("remove", node, str(ctid)))
        return self.data.get(node, {}).pop(ctid, None) is not None


class Runner(MoveRunner):
    """The workflow with the racks played by the test: where each CT runs."""

    def __init__(self, inv: inventory.Inventory, storage: FakeStorage, slot: int = 102) -> None:
        super().__init__(inv.store, inv.dc, slot, storage, MoveSettings(bwlimit=1 << 20, stop_timeout=60,
                                                                        start_timeout=60), Settings())
        self.running: dict[int, int] = {}  # CTID -> rack it runs in
        self.rejecting = False

    def _down_in(self, m: moves.Move, rack: int) -> tuple[bool, str]:
        up = [c for c in m.cts if self.running.get(c.ctid) == rack]
        return (not up, f"CT {up[0].ctid} still runs" if up else "")

    def _online_in(self, m: moves.Move, rack: int) -> tuple[bool, str]:
        return all(self.running.get(c.ctid) == rack for c in m.cts), "not UP yet"

    def reconcile_racks(self) -> None:
        """What the two racks' managers would do with the configuration as it is now."""
        held = moves.held(self.store)
        for ct in queries.cts(self.store, tenant="myhost"):
            if ct.tenant in held:
                self.running.pop(ct.ctid, None)
            elif not self.rejecting or ct.rack != 102:
                self.running[ct.ctid] = ct.rack

    def run(self, m: moves.Move, rounds: int = 30) -> moves.Move:
        for _ in range(rounds):
            m = self.step(m)
            self.reconcile_racks()
            if not m.open:
                break
        return m


def started(inv: inventory.Inventory, **kw) -> moves.Move:
    return change(inv, moves.begin, inv.store, inv.dc, "myhost", 102, inv.store.now(), **kw)


def storage_of(inv: inventory.Inventory) -> FakeStorage:
    ct = queries.find_ct(inv.store, "myhost")
    return FakeStorage({ct.storage: {ct.ctid: 50 << 20}})


def runner(inv: inventory.Inventory) -> tuple[Ct, FakeStorage, Runner]:
    """myhost (running in rack-101, 50 MiB of /data), its storage nodes, and the workflow into rack-102."""
    ct = queries.find_ct(inv.store, "myhost")
    storage = storage_of(inv)
    r = Runner(inv, storage)
    r.running[ct.ctid] = 101
    return ct, storage, r


def test_a_move_copies_stops_flips_and_deletes_the_source_copy(dc2: inventory.Inventory) -> None:
    before = queries.find_ct(dc2.store, "myhost")
    storage = storage_of(dc2)
    storage.grow = 4 << 20  # the tenant writes between passes
    r = Runner(dc2, storage)
    r.running[before.ctid] = 101
    m = r.run(started(dc2))
    assert m.phase == "done", m.log
    assert 1 <= m.passes - 1 <= 3  # pre-copy passes, then the final one
    after = queries.find_ct(dc2.store, "myhost")
    assert (after.ctid, after.rack, after.storage) == (before.ctid, 102, "storage-102-3")
    assert after.ip.startswith("10.102.4.")
    assert queries.tenant_rack(dc2.store, "myhost") == 102
    routes = {x.service: x.target for x in queries.routes(dc2.store, tenant="myhost")}
    assert routes == {"mailstore": "mailstore-102-1", "smtp": "relay-102", "socks": "socks-102-1",
                      "metrics": "metrics-102-1"}
    assert before.ctid not in storage.data[before.storage]  # deleted, after online
    assert storage.data["storage-102-3"][before.ctid] >= 50 << 20
    assert m.downtime is not None and m.downtime >= 0
    tomb = dc2.store.one("SELECT rack, purge FROM removed WHERE ct_id = ?", (before.ctid,))
    assert tuple(tomb) == (101, 0)  # rack-101's HNs drop the CT's config, /data kept there until delete


def test_the_source_copy_is_deleted_only_after_online(dc2: inventory.Inventory) -> None:
    ct, storage, r = runner(dc2)
    r.rejecting = True  # rack-102 never runs it: never online
    m = r.run(started(dc2, keep_source=False), rounds=8)
    assert m.phase == "cutover" and m.step == "start" and m.flipped
    assert ("remove", ct.storage, str(ct.ctid)) not in storage.calls


def test_keep_source_rests_online_until_asked(dc2: inventory.Inventory) -> None:
    ct, storage, r = runner(dc2)
    m = r.run(started(dc2, keep_source=True), rounds=15)
    assert (m.phase, m.open) == ("online", True)
    assert ct.ctid in storage.data[ct.storage]
    with pytest.raises(ConflictError, match="too late to abort"):
        change(dc2, moves.ask_abort, dc2.store, m, 0.0)
    m = change(dc2, moves.update, dc2.store, m, dc2.store.now(), "asked", keep_source=False)
    assert r.run(m).phase == "done" and ct.ctid not in storage.data[ct.storage]


@pytest.mark.parametrize("when", ["copy", "final", "start"])
def test_a_failure_before_online_rolls_back_to_the_source_unchanged(dc2: inventory.Inventory, when: str) -> None:
    before = queries.find_ct(dc2.store, "myhost")
    routes = queries.routes(dc2.store, tenant="myhost")
    storage = storage_of(dc2)
    r = Runner(dc2, storage)
    r.running[before.ctid] = 101
    m = started(dc2)
    if when == "copy":
        storage.fail = "target storage full: No space left on device"
    for _ in range(40):
        if when == "final" and m.step == "final":
            storage.fail = "rsync was killed (exit 20)"
        if when == "start" and m.step == "final":  # rack-102's HNs will refuse it
            r.rejecting = True
        if when == "start" and m.step == "start":  # (the flip cleared what rack-102 remembered before)
            with dc2.store.transaction(config=False):
                for hn in ("hn-102-1", "hn-102-2"):
                    dc2.store.execute("INSERT INTO rejections (ct_id, hn, until, reason, rack) VALUES (?, ?, ?, ?, ?)",
                                      (before.ctid, hn, dc2.store.now() + 300, "not enough memory", 102))
        m = r.step(m)
        r.reconcile_racks()
        if not m.open:
            break
    assert m.phase == "rolled-back", m.log
    assert m.error and (when != "start" or "rejected" in m.error), m.error
    assert queries.find_ct(dc2.store, "myhost") == before  # rack, address, storage as they were
    assert queries.routes(dc2.store, tenant="myhost") == routes
    assert r.running == {before.ctid: 101}
    assert storage.data[before.storage][before.ctid] >= 50 << 20  # the source copy is untouched
    assert before.ctid not in storage.data.get("storage-102-3", {})  # the partial copy is gone
    assert moves.held(dc2.store) == set()


def test_the_flip_back_waits_until_the_destination_stopped_it(dc2: inventory.Inventory) -> None:
    ct, storage, r = runner(dc2)
    m = started(dc2)
    while m.step != "start":
        m = r.step(m)
        r.reconcile_racks()
    r.running[ct.ctid] = 102
    m = change(dc2, moves.update, dc2.store, m, dc2.store.now(), "", deadline=0.0)
    r.rejecting = False
    m = r._rollback(m, "test")
    assert m.hold and m.flipped and moves.held(dc2.store) == {"myhost"}
    for _ in range(3):  # rack-102 has not stopped it yet: no flip back
        m = r.step(m)
        assert m.flipped and m.step == "stop"
    r.running.pop(ct.ctid)
    m = r.step(m)
    assert not m.flipped and queries.find_ct(dc2.store, "myhost").rack == 101


def test_abort_before_online_rolls_back(dc2: inventory.Inventory) -> None:
    ct, storage, r = runner(dc2)
    m = r.step(started(dc2))
    m = change(dc2, moves.ask_abort, dc2.store, m, dc2.store.now())
    m = r.run(m)
    assert m.phase == "rolled-back" and m.error == "aborted by ops"
    assert queries.find_ct(dc2.store, "myhost") == ct and r.running == {ct.ctid: 101}


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
    ct, storage, r = runner(dc2)
    m = started(dc2)
    while not m.flipped:
        m = r.step(m)
        r.reconcile_racks()
    new = change(dc2, dc2.add_ct, "other", 101, resources=dc2.dc.defaults)
    assert new.ip != ct.ip  # myhost's old address stays free for a rollback


def test_realms_refuse_placement_and_moves_outside(dc2: inventory.Inventory) -> None:
    assert dc2.dc.realm_of(101) == "eu-west" and dc2.dc.realm_of(201) == "us-east"
    assert moves.tenant_realm(dc2.store, "initech") == "eu-west"  # from the example template
    with pytest.raises(InputError, match="pinned to realm 'eu-west', and rack-201 is in realm 'us-east'"):
        change(dc2, moves.begin, dc2.store, dc2.dc, "initech", 201, 0.0)
    assert moves.listing(dc2.store) == []  # nothing recorded, nothing copied
    with pytest.raises(InputError, match="cannot place it"):
        change(dc2, dc2.add_tenant, "euco", 201, (), dc2.dc.defaults, "eu-west")
    with pytest.raises(InputError, match="unknown realm 'mars'"):
        change(dc2, moves.set_realm, dc2.store, dc2.dc, "myhost", "mars")
    with pytest.raises(InputError, match="cannot pin tenant myhost to realm 'us-east'"):
        change(dc2, moves.set_realm, dc2.store, dc2.dc, "myhost", "us-east")
    assert change(dc2, moves.set_realm, dc2.store, dc2.dc, "myhost", "eu-west") == ""
    assert started(dc2).dst == 102  # eu-west to eu-west is fine
    assert change(dc2, moves.begin, dc2.store, dc2.dc, "acme", 201, 0.0).dst == 201  # unpinned: anywhere


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


def test_a_copy_is_cancelled_when_the_manager_stops_leading_and_the_move_waits(dc2: inventory.Inventory) -> None:
    import threading

    class Slow(FakeStorage):
        def __init__(self, data: dict[str, dict[int, int]]) -> None:
            super().__init__(data)
            self.cancelled = threading.Event()

        def pull(self, node: str, ctid: int, source: str, path: str, bwlimit: int, timeout: float) -> Pulled:
            self.calls.append(("pull", node, str(ctid), source))
            if not self.cancelled.wait(10):
                raise AssertionError("never cancelled")
            raise StorageFailed("rsync was killed (exit 20)")

        def cancel(self, node: str, ctid: int) -> bool:
            self.calls.append(("cancel", node, str(ctid)))
            self.cancelled.set()
            return True

    ct = queries.find_ct(dc2.store, "myhost")
    storage = Slow({ct.storage: {ct.ctid: 1 << 20}})
    r = Runner(dc2, storage)
    looks = iter([True, False])
    r.leading = lambda: next(looks, False)
    m = r.step(started(dc2))
    assert ("cancel", "storage-102-3", str(ct.ctid)) in storage.calls
    assert (m.phase, m.passes, m.error) == ("copy", 0, "")  # left for the next leader, not rolled back


def test_the_source_counts_as_down_only_after_its_manager_took_the_hold_in(dc2: inventory.Inventory) -> None:
    """The real rule (not the test's stand-in): time to take the hold in, no intent
    in flight, and a fresh report after any action of lately."""
    ct = queries.find_ct(dc2.store, "myhost")
    real = MoveRunner(dc2.store, dc2.dc, 102, storage_of(dc2), MoveSettings(), Settings())
    now = dc2.store.now()
    m = change(dc2, moves.update, dc2.store, started(dc2), now, "", hold=True, held_at=now)
    assert real._down_in(m, 101) == (False, "rack-101 takes the hold in")
    m = change(dc2, moves.update, dc2.store, m, now, "", held_at=now - 5)
    assert real._down_in(m, 101) == (True, "")  # no HN has reported this CT, none acted on it
    with dc2.store.transaction(config=False):
        dc2.store.execute("INSERT INTO journal (at, kind, ct_id, hn, reason, state, rack) VALUES "
                          "(?, 'start', ?, 'hn-101-2', 'crashed', 'pending', 101)", (now - 1, ct.ctid))
    down, why = real._down_in(m, 101)
    assert not down and "in flight on hn-101-2" in why  # a start decided before the hold: wait for it
    with dc2.store.transaction(config=False):
        dc2.store.execute("UPDATE journal SET state = 'done', finished_at = ? WHERE ct_id = ?", (now - 0.5, ct.ctid))
    down, why = real._down_in(m, 101)
    assert not down and "hn-101-2" in why  # it finished: hn-101-2 must report (fresh) before it counts as down
    with dc2.store.transaction(config=False):  # a stop came after it, and was done: down there, at once
        dc2.store.execute("INSERT INTO journal (at, kind, ct_id, hn, reason, state, finished_at, rack) VALUES "
                          "(?, 'stop', ?, 'hn-101-2', 'held down', 'done', ?, 101)", (now - 0.3, ct.ctid, now - 0.2))
    assert real._down_in(m, 101) == (True, "")


def test_an_abort_with_no_destination_manager_releases_the_tenant_at_once(dc2: inventory.Inventory) -> None:
    m = change(dc2, moves.update, dc2.store, started(dc2), 1.0, "", phase="cutover", step="stop", hold=True)
    assert moves.held(dc2.store) == {"myhost"}
    m = change(dc2, moves.ask_abort, dc2.store, m, 2.0, runner_alive=False)
    assert (m.phase, m.open, m.error) == ("rolled-back", False, "aborted by ops")
    assert moves.held(dc2.store) == set() and "storage-102-3" in m.log[-1]
    assert started(dc2).open  # the tenant is free again: a new move may begin


def test_a_hold_whose_destination_vanished_is_released_by_the_source_past_its_deadline(
        dc2: inventory.Inventory) -> None:
    m = change(dc2, moves.update, dc2.store, started(dc2), 1.0, "", phase="cutover", step="final", hold=True,
               held_at=100.0, deadline=160.0)
    assert change(dc2, moves.release_overdue, dc2.store, 101, 185.0, 30.0, lambda: set()) == []  # not yet
    assert change(dc2, moves.release_overdue, dc2.store, 101, 195.0, 30.0, lambda: {102}) == []  # 102 leads
    assert change(dc2, moves.release_overdue, dc2.store, 102, 195.0, 30.0, lambda: set()) == []  # not its rack's
    (m,) = change(dc2, moves.release_overdue, dc2.store, 101, 195.0, 30.0, lambda: set())
    assert (m.phase, m.step, m.hold, m.flipped) == ("rollback", "start", False, False)
    assert moves.held(dc2.store) == set() and "gone mid-cutover" in m.error
