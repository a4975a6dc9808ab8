"""The rack's lease (store/lease.py), one manager's side of it (manager/leadership.py),
and the epoch at the agent's end: a deposed leader can neither write nor act."""

from __future__ import annotations

import pytest

from ctmanager.errors import ConflictError
from ctmanager.fencing.quorum import MANAGER
from ctmanager.manager import passes
from ctmanager.manager.leadership import Leadership
from ctmanager.store import lease as leases
from ctmanager.store import open_store
from ctmanager.store.db import Locator, Store
from ctmanager.store.lease import LeaseLost
from ctmanager.wire.reports import Metrics, Report, parse_body

RACK = 101


@pytest.fixture
def store(store_path: Locator) -> Store:
    return open_store(store_path, create=True)


def test_one_holder_at_a_time_and_the_epoch_only_grows(store: Store) -> None:
    a = leases.acquire(store, RACK, "mgr-a", "run-1", "pid 1 on a", 6.0)
    # an epoch is never below the store's clock in seconds: a restored store still hands out newer ones
    assert a is not None and a.epoch == int(a.acquired)
    assert leases.acquire(store, RACK, "mgr-b", "run-2", "pid 2 on b", 6.0) is None  # held
    again = leases.acquire(store, RACK, "mgr-a", "run-1", "pid 1 on a", 6.0)
    assert again is not None and again.epoch == a.epoch and again.acquired == a.acquired  # its own: a renewal
    assert leases.release(store, a) and not leases.release(store, a)
    b = leases.acquire(store, RACK, "mgr-b", "run-2", "pid 2 on b", 6.0)
    assert b is not None and b.epoch == a.epoch + 1  # released: free at once, a new epoch (within the second)
    other_rack = leases.acquire(store, 102, "mgr-a", "run-1", "pid 1 on a", 6.0)
    assert other_rack is not None and other_rack.epoch == int(other_rack.acquired)  # each rack has its own


def test_another_run_under_the_same_name_waits_for_the_lease_to_end(store: Store) -> None:
    """Two reconcile passes, or a manager restarted while its earlier run may live
    on (a lost connection dropped its name lock): never both at once."""
    old = leases.acquire(store, RACK, "mgr-a", "run-1", "", 6.0)
    assert old is not None and leases.acquire(store, RACK, "mgr-a", "run-2", "", 6.0) is None
    leases.release(store, old)  # or its ttl ran out
    new = leases.acquire(store, RACK, "mgr-a", "run-2", "", 6.0)
    assert new is not None and new.epoch == old.epoch + 1
    with pytest.raises(LeaseLost, match=rf"mgr-a took it with epoch {new.epoch}$"):
        leases.renew(store, old, 6.0)


def test_a_deposed_leaders_writes_fail_and_change_nothing(store: Store) -> None:
    a = leases.acquire(store, RACK, "mgr-a", "run-1", "", 0.3)
    assert a is not None
    store.fence = lambda s: leases.check(s, a)
    with store.transaction(config=False):
        store.set_meta("written-by", "mgr-a")
    leases.release(store, a)
    b = leases.acquire(store, RACK, "mgr-b", "run-2", "", 6.0)
    assert b is not None
    with pytest.raises(LeaseLost, match=rf"the lease of rack-101 \(epoch {a.epoch}\) was lost: mgr-b took it with "
                                        rf"epoch {b.epoch}$"):
        with store.transaction(config=False):
            store.set_meta("written-by", "mgr-a again")
    assert store.get_meta("written-by") == "mgr-a"
    with pytest.raises(LeaseLost):
        leases.renew(store, a, 6.0)


def test_an_expired_lease_is_lost_on_the_stores_clock(store: Store) -> None:
    a = leases.acquire(store, RACK, "mgr-a", "run-1", "", 0.05)
    assert a is not None
    deadline = a.expires + 0.01  # past it on any clock resolution (SQLite's 'now' has milliseconds)
    while store.now() <= deadline:
        pass
    with pytest.raises(LeaseLost, match="it expired"):
        leases.renew(store, a, 6.0)
    b = leases.acquire(store, RACK, "mgr-b", "run-2", "", 6.0)
    assert b is not None and b.epoch > a.epoch


def test_the_leader_stops_believing_its_lease_before_the_store_lets_it_go(store: Store) -> None:
    mono = [100.0]
    lead = Leadership(store, RACK, "mgr-a", "run-1", "", 6.0, lambda: mono[0])
    assert lead.step(can_lead=False) is None and not lead.leading()  # no quorum heard: no try
    change = lead.step(can_lead=True)
    assert change is not None and change.gained and lead.leading() and lead.epoch > 0
    other = open_store(store.path)
    stand = Leadership(other, RACK, "mgr-b", "run-2", "", 6.0, lambda: mono[0])
    assert stand.step(can_lead=True) is None  # held
    store.close()  # mgr-a loses the store: its renewals fail from now on
    mono[0] += 5.0 - 0.01
    assert lead.step(can_lead=True) is None and lead.leading()
    mono[0] += 0.01  # ttl - ttl/6 since it sent its last renewal: it stops acting, by its own clock
    change = lead.step(can_lead=True)
    assert change is not None and not change.gained and not lead.leading()
    lease = leases.current(other, RACK)
    assert lease is not None and lease.live(other.now())  # the store still holds it: nobody else may lead yet


def test_a_leader_that_lets_go_holds_off_before_it_tries_again(store: Store) -> None:
    mono = [0.0]
    lead = Leadership(store, RACK, "mgr-a", "run-1", "", 6.0, lambda: mono[0])
    assert lead.step(can_lead=True) is not None
    assert lead.step_down("no quorum", 6.0) is not None and leases.acquire(store, RACK, "x", "y", "", 1.0) is not None
    leases.release(store, leases.current(store, RACK))  # type: ignore[arg-type]
    mono[0] += 5.9
    assert lead.step(can_lead=True) is None
    mono[0] += 0.2
    first = lead.last_epoch
    change = lead.step(can_lead=True)
    assert change is not None and change.gained and lead.epoch == first + 2


def test_reconcile_refuses_beside_a_leader_and_leaves_the_lease_as_it_was(store: Store) -> None:
    from ctmanager.executor.ssh import SshSettings
    from ctmanager.manager.config import ManagerConfig
    from ctmanager.reconcile.state import Settings
    config = ManagerConfig(file="t", slot=RACK, listen=("127.0.0.1", 0), key=b"k" * 32, agent_command=("ctagent",),
                           ssh=SshSettings("root", "/k", "/kh"), action_timeout=30.0, concurrency=1,
                           settings=Settings(), full_plan_every=1.0)
    taken = passes.take_rack(store, config)
    assert taken.holder == passes.RECONCILE and "ctmanager reconcile pid" in taken.detail
    passes.release(store, taken)
    assert store.fence is None
    a = leases.acquire(store, RACK, "mgr-a", "run-1", "ctmanager run pid 7 on a", 6.0)
    with pytest.raises(ConflictError, match=r"^rack-101 is led by mgr-a \(ctmanager run pid 7 on a\) since "
                                            r"\S+ \(lease renewed \d+\.\ds ago\); reconcile would act beside it"):
        passes.take_rack(store, config)
    assert leases.current(store, RACK) == a


def test_manager_status_view(store: Store) -> None:
    leases.check_in(store, RACK, "mgr-a", "run-1", "pid 1 on a", "standby", 0, None)
    leases.check_in(store, RACK, "mgr-b", "run-2", "pid 2 on b", "stopped", 1, 3.0)
    assert leases.acquire(store, RACK, "mgr-a", "run-1", "pid 1 on a", 6.0) is not None
    epoch = leases.current(store, RACK).epoch  # type: ignore[union-attr]
    leases.check_in(store, RACK, "mgr-a", "run-1", "pid 1 on a", "leader", epoch, 0.5)
    view = {v.name: v for v in leases.view(store)}
    assert view["mgr-a"].role == "leader" and view["mgr-a"].epoch == epoch and view["mgr-a"].heard is not None
    assert view["mgr-b"].role == "down" and view["mgr-b"].why == "stopped"
    assert leases.leaders(store) == {RACK: ("mgr-a", epoch)}


# ---- the epoch on the wire (the agent's end: tests/unit/test_agent.py) ----------

def test_a_heartbeat_says_its_epoch() -> None:
    beat = Report(RACK, MANAGER, "0123456789abcdef", 1, 1.0, False, Metrics(0, 0, 0, 0, 0, 0), (), epoch=7)
    assert parse_body(beat.body()).epoch == 7
    assert b"epoch" not in beat._replace(epoch=0).body()  # an agent's report does not carry one
