"""The manager daemon's loop (manager/daemon.py) with test ports and a real
SQLite store file that a second connection (the CLI) writes concurrently: the
races a daemon beside ops' CLI runs into, each with the behaviour ops need."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from ctmanager.dnsroutes.worker import DnsWorker
from ctmanager.errors import NotFoundError, StoreError
from ctmanager.executor.runner import Result
from ctmanager.executor.ssh import SshSettings
from ctmanager.fencing.quorum import MANAGER
from ctmanager.manager.config import ManagerConfig
from ctmanager.manager.daemon import CONFIG_CHECK_EVERY, PRUNE_EVERY, Manager
from ctmanager.manager.ports import ManagerEnv, ThreadRunner
from ctmanager.operations import inventory
from ctmanager.reconcile.state import Action, Settings
from ctmanager.store import lease as leases
from ctmanager.store import loop as persist
from ctmanager.store import open_store, queries
from ctmanager.store import proxies as proxyrows
from ctmanager.wire.reports import CtState, Metrics, Receiver, Report

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "templates" / "dc" / "example.toml"
KEY = b"k" * 32
HNS = ("hn-101-1", "hn-101-2", "hn-101-3")
METRICS = Metrics(0.1, 512 << 30, 500 << 30, 4 << 40, 3 << 40, 0)


class Transport:
    def __init__(self) -> None:
        self.inbox: list[Report] = []

    def receive(self, receiver: Receiver, now: float) -> list[Report]:
        got, self.inbox = self.inbox, []
        return [r for r in got if receiver.accept(r, r.hn, now) is not None]

    def send(self, report: Report, to: Sequence[tuple[str, int]]) -> None:
        pass

    def wait(self, timeout: float, also: Sequence[int] = ()) -> None:
        pass


class Executor:
    def __init__(self) -> None:
        self.submitted: list[Action] = []
        self.answer = False  # answer every action at once with "done"

    def submit(self, actions: Iterable[Action], spec_of: Any, done: Callable[[Any], None], epoch: int = 0) -> None:
        assert epoch > 0  # every action carries the leader's epoch
        for a in actions:
            assert spec_of(a.ctid) is not None
            self.submitted.append(a)
            if self.answer:
                done(Result(a, "done", "ok", 0.1))

    def close(self) -> None:
        pass


class Events:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.on_news: Callable[[], None] | None = None  # runs after a decision, before it is recorded

    def news(self, line: str) -> None:
        self.lines.append(line)
        if self.on_news is not None:
            hook, self.on_news = self.on_news, None
            hook()

    def alarm(self, text: str) -> None:
        self.lines.append(f"ALARM {text}")

    def action(self, a: Action) -> None:
        self.lines.append(str(a))

    def result(self, a: Action, result: str, message: str, seconds: float) -> None:
        pass

    def fencing(self, hn: str, silent_for: float, argv0: str) -> None:
        pass

    def fenced(self, hn: str, ok: bool, detail: str) -> None:
        pass

    def note(self, line: str) -> None:
        pass

    def trouble(self, line: str) -> None:
        self.lines.append(f"TROUBLE {line}")

    def crash_loop(self, ctid: int, crashes: int, window: float) -> None:
        self.lines.append(f"CRASH LOOP {ctid} {crashes}")

    def leadership(self, line: str) -> None:
        self.lines.append(f"LEADERSHIP {line}")


class Loop:
    """A manager on a store file, and the CLI's own connection to the same file."""

    def __init__(self, path: Path, busy_timeout_ms: int = 10_000, lead: bool = True, **env_kw: Any) -> None:
        self.path = path
        self.cli = open_store(path)
        self.store = open_store(path, busy_timeout_ms=busy_timeout_ms)
        self.transport, self.executor, self.events = Transport(), Executor(), Events()
        self.now = 1000.0
        self.mono = 0.0  # the manager's monotonic clock: tests may set `now` anywhere, this only moves on
        self.seq = 0
        config = ManagerConfig(file="test", slot=101, listen=("127.0.0.1", 0), key=KEY, agent_command=("ctagent",),
                               ssh=SshSettings("root", "/k", "/kh"), action_timeout=30.0, concurrency=1,
                               settings=Settings(), full_plan_every=1.0, metrics_prefix="test")
        env = ManagerEnv(self.store, self.executor, self.transport, clock=lambda: self.now, mono=lambda: self.mono,
                         events=self.events, receiver=Receiver(KEY, 101), **env_kw)
        self.m = Manager(queries.dc_template(self.store), config, env, holder="test manager", poll=False)
        self.m.start()
        assert not self.m.leading  # a manager starts as a standby,
        if lead:
            self.reports()
            self.step()  # and leads once it hears a quorum,
            assert self.m.leading
            self.step(1.0)  # counting contact only from its takeover on: the HNs' next reports

    def reports(self, running: dict[str, set[int]] | None = None, down: dict[str, set[int]] | None = None) -> None:
        """Every HN reports (hearing the manager), with the CTs it runs (and has, stopped)."""
        running, down = running or {}, down or {}
        self.seq += 1  # every HN's next report
        for hn in HNS:
            cts = tuple(sorted([CtState(c, "UP", self.now - 1) for c in running.get(hn, ())] +
                               [CtState(c, "DOWN", self.now - 1) for c in down.get(hn, ())]))
            self.transport.inbox.append(Report(101, hn, "0123456789abcdef", self.seq, self.now, False, METRICS, cts,
                                               False, {MANAGER: 0.1, **{h: 0.1 for h in HNS if h != hn}}))

    def step(self, dt: float = 0.0) -> None:
        self.now += dt
        self.mono += dt
        self.m.step(self.now)

    def edit(self, fn: Callable[[inventory.Inventory], Any]) -> Any:
        """A CLI edit, committed on the CLI's connection."""
        with self.cli.transaction():
            return fn(inventory.Inventory(self.cli, queries.dc_template(self.cli)))


@pytest.fixture
def loop(tmp_path: Path) -> Loop:
    path = tmp_path / "dc.db"
    with open_store(path, create=True) as s, s.transaction():
        inventory.init(s, EXAMPLE)
    return Loop(path)


def converge(loop: Loop) -> dict[int, str]:
    loop.reports()
    loop.step(1.0)
    starts = {a.ctid: a.hn for a in loop.executor.submitted if a.kind == "start"}
    assert len(starts) == 8, loop.events.lines
    return starts


def test_a_cli_edit_committed_during_a_tick_is_taken_in(loop: Loop) -> None:
    """The old daemon read the store's data_version after its own commit, so an
    edit committed while it planned looked like its own write and was missed."""
    loop.events.on_news = lambda: loop.edit(lambda inv: inv.set_drained("hn-101-1", True))
    converge(loop)
    assert loop.m.core is not None and not loop.m.core.configured.hns["hn-101-1"].drained  # planned before it
    loop.reports()
    loop.step(CONFIG_CHECK_EVERY)
    assert loop.m.core.configured.hns["hn-101-1"].drained


def test_a_ct_move_committed_during_a_tick_wins_over_the_plan(loop: Loop) -> None:
    """The old tick upserted its placements over a `ct move` that landed meanwhile."""
    moved: dict[str, Any] = {}

    def move() -> None:
        assert loop.m.core is not None
        planned = loop.m.core.placements.where[1005]
        moved["to"] = to = next(h for h in HNS if h != planned)
        loop.edit(lambda inv: inv.move_ct("1005", to))

    loop.events.on_news = move
    loop.reports()
    loop.step(1.0)
    assert queries.placement(loop.cli, 1005) == moved["to"]  # the operator's placement stands
    assert [a for a in loop.executor.submitted if a.ctid == 1005] == []  # nothing planned on the old view ran
    assert len({a.ctid for a in loop.executor.submitted}) == 7
    loop.reports()
    loop.step(1.0)
    assert [(a.kind, a.hn) for a in loop.executor.submitted if a.ctid == 1005] == [("start", moved["to"])]


def test_a_locked_store_costs_a_step_not_the_daemon(tmp_path: Path) -> None:
    path = tmp_path / "dc.db"
    with open_store(path, create=True) as s, s.transaction():
        inventory.init(s, EXAMPLE)
    loop = Loop(path, busy_timeout_ms=50)
    locker = sqlite3.connect(str(path), isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # a writer holding the lock longer than the busy timeout
    loop.reports()
    loop.step(0.5)  # did not raise (a step shorter than the lease's belief: the leader stays the leader)
    assert loop.executor.submitted == []  # nothing runs whose intent is not recorded
    assert any(line.startswith("TROUBLE store trouble (tick)") and "busy" in line for line in loop.events.lines)
    locker.execute("ROLLBACK")
    loop.reports()
    loop.step(1.0)
    assert len({a.ctid for a in loop.executor.submitted}) == 8
    journal = loop.cli.query("SELECT count(*) FROM journal WHERE state = 'pending'")[0][0]
    assert journal == 8


def test_a_failed_commit_leaves_no_transaction_open(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db", create=True) as s:
        with pytest.raises(StoreError, match="cannot commit"), s.transaction():
            s.execute("PRAGMA defer_foreign_keys = ON")  # the violation surfaces at COMMIT
            s.execute("INSERT INTO tenants (name, rack, created_at) VALUES ('x', 999, 0)")
        assert not s.db.in_transaction
        with s.transaction():  # the connection is usable again
            s.set_meta("k", "v")
        assert s.get_meta("k") == "v"


def test_reads_in_a_snapshot_see_one_state(loop: Loop) -> None:
    with loop.store.snapshot():
        before = len(queries.cts(loop.store))
        loop.edit(lambda inv: inv.add_ct("extra", 101, resources=inv.dc.defaults))
        assert len(queries.cts(loop.store)) == before
    assert len(queries.cts(loop.store)) == before + 1


def test_the_daemon_leads_the_rack_and_lets_it_go(loop: Loop) -> None:
    lease = leases.current(loop.cli, 101)
    # judged on the store's clock, whatever the manager's says (here: a test clock at 1000)
    assert lease is not None and lease.holder == "manager" and lease.detail == "test manager"
    assert lease.epoch >= int(lease.acquired) and lease.live(loop.cli.now()) and not lease.live(loop.cli.now() + 6.1)
    loop.m.stop()
    loop.m.run()  # stopping already: releases the lease and checks out
    lease = leases.current(loop.cli, 101)
    assert lease is not None and not lease.live(loop.cli.now()) and lease.epoch == loop.m.leadership.last_epoch
    assert [(c.name, c.role) for c in leases.check_ins(loop.cli, 101)] == [("manager", "stopped")]


def test_retention_drops_old_history_only(loop: Loop) -> None:
    now = time.time()
    with loop.cli.transaction(config=False):
        loop.cli.execute("INSERT INTO journal (at, kind, ct_id, hn, reason, state, finished_at) "
                         "VALUES (?, 'start', 1000, 'hn-101-1', 'old', 'done', ?)", (now - 8 * 86400, now - 8 * 86400))
        loop.cli.execute("INSERT INTO journal (at, kind, ct_id, hn, reason, state) "
                         "VALUES (?, 'start', 1001, 'hn-101-1', 'old but pending', 'pending')", (now - 8 * 86400,))
        loop.cli.execute("INSERT INTO events (at, kind, subject) VALUES (?, 'x', 'old')", (now - 91 * 86400,))
    events = loop.cli.query("SELECT count(*) FROM events")[0][0]
    loop.now = now
    loop.m.next_prune = 0.0
    loop.step()
    reasons = [r[0] for r in loop.cli.query("SELECT reason FROM journal")]
    assert "old" not in reasons and "old but pending" in reasons
    assert loop.cli.query("SELECT count(*) FROM events")[0][0] == events - 1
    assert loop.m.next_prune == now + PRUNE_EVERY


def test_an_edge_route_for_a_missing_tenant_is_refused_inside_the_transaction(loop: Loop) -> None:
    with pytest.raises(NotFoundError, match="no tenant 'nobody'"):
        proxyrows.set_path_route(loop.cli, "nobody", "/x/", "svc", False, (), ())
    assert proxyrows.path_routes(loop.cli) == []


def test_the_dns_worker_survives_a_broken_store(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A raw sqlite3 error used to end the worker thread without a word: now the
    job's error comes back to the worker's step, which says it and backs off."""
    path = tmp_path / "dc.db"
    with open_store(path, create=True) as s, s.transaction():
        inventory.init(s, EXAMPLE)
    raw = sqlite3.connect(str(path))
    raw.execute("DROP TABLE dns_state")
    raw.commit()
    raw.close()
    worker = DnsWorker(path, ThreadRunner())
    worker.poke()
    with caplog.at_level(logging.ERROR, logger="ctmanager.dnsroutes.worker"):
        deadline = time.monotonic() + 10
        while "dns_state" not in caplog.text and time.monotonic() < deadline:
            worker.step(0.0, True)
            time.sleep(0.02)
    assert "no such table: dns_state" in caplog.text
    assert worker.due(0.0) == 1.0  # retried after the backoff's first second


class Recorder:
    """A leader-only worker (ports.Worker) that only records how it is stepped."""

    def __init__(self) -> None:
        self.lease_of: Callable[[], Any] | None = None
        self.steps: list[tuple[float, bool, Any]] = []
        self.closed = False

    def step(self, now: float, leading: bool) -> None:
        assert self.lease_of is not None
        self.steps.append((now, leading, self.lease_of()))

    def due(self, now: float) -> float:
        return now + 0.25

    def close(self) -> None:
        self.closed = True


def test_the_loop_steps_its_workers_leading_or_not_and_wakes_when_they_are_due(tmp_path: Path) -> None:
    path = tmp_path / "dc.db"
    with open_store(path, create=True) as s, s.transaction():
        inventory.init(s, EXAMPLE)
    worker = Recorder()
    loop = Loop(path, lead=False, workers=[worker])
    loop.step()
    assert worker.steps[-1] == (loop.now, False, None)  # a standby's: it starts nothing
    loop.reports()
    loop.step()
    assert loop.m.leading and worker.steps[-1] == (loop.now, True, loop.m.leadership.lease)
    assert loop.m.step(loop.now) == loop.now + 0.25  # the worker's due is the loop's next wake-up
    loop.m.step(loop.now, act=False)  # draining a stopping daemon: nothing new
    assert worker.steps[-1][1] is False


def test_a_reload_pokes_the_dns_worker_whose_job_is_fenced_by_the_lease(tmp_path: Path) -> None:
    from ctmanager.dnsroutes.sync import SyncReport
    from ctmanager.dnsroutes.worker import Synced

    class Runner:
        def __init__(self) -> None:
            self.jobs: list[tuple[Any, Callable[[Any], None]]] = []

        def submit(self, job: Any, done: Callable[[Any], None], name: str = "job") -> None:
            self.jobs.append((job, done))

    path = tmp_path / "dc.db"
    with open_store(path, create=True) as s, s.transaction():
        inventory.init(s, EXAMPLE)
    runner = Runner()
    loop = Loop(path, dns=DnsWorker(path, runner))
    [(job, done)] = runner.jobs  # poked as it took the lease: a sync, fenced by this leadership's lease
    lease, verify = job.args
    assert (lease.rack, lease.holder, lease.epoch, verify) == (101, "manager", loop.m.leadership.epoch, False)
    runner.jobs.clear()
    done(Synced(SyncReport()))
    loop.step(CONFIG_CHECK_EVERY)
    assert runner.jobs == []  # nothing changed: nothing to publish
    loop.edit(lambda inv: inv.set_drained("hn-101-1", True))
    loop.step(CONFIG_CHECK_EVERY)
    assert len(runner.jobs) == 1  # the reload poked it


def test_a_crash_loop_is_recorded_and_survives_a_reload(loop: Loop) -> None:
    loop.executor.answer = True
    starts = converge(loop)
    up = {hn: {c for c, h in starts.items() if h == hn} for hn in HNS}
    acme = starts[1006]
    crashed = {**up, acme: up[acme] - {1006}}

    def crash_and_restart() -> None:
        loop.reports(up)  # it runs ...
        loop.step(1.0)
        loop.reports(crashed, {acme: {1006}})  # ... and dies by itself
        loop.step(1.0)
        loop.step(0.0)  # the restart's result
    for _ in range(6):
        crash_and_restart()
    restarts = [a for a in loop.executor.submitted if a.ctid == 1006 and a.reason.startswith("crashed")]
    assert len(restarts) == 4  # the 5th crash is not restarted
    assert "CRASH LOOP 1006 5" in loop.events.lines
    assert loop.cli.query("SELECT count FROM crash_loops WHERE ct_id = 1006")[0][0] == 5
    loop.edit(lambda inv: inv.set_drained("hn-101-3", False))  # any edit: the manager reloads
    for _ in range(3):
        loop.reports(crashed, {acme: {1006}})
        loop.step(1.0)
    assert len([a for a in loop.executor.submitted if a.ctid == 1006]) == 5  # still left down
    loop.edit(lambda inv: inv.reset_ct("acme"))
    loop.reports(crashed, {acme: {1006}})
    loop.step(1.0)
    assert loop.executor.submitted[-1].ctid == 1006 and loop.executor.submitted[-1].kind == "start"


def test_a_start_that_keeps_failing_is_no_crash(loop: Loop) -> None:
    """A hung runtime's start never succeeds: retrying it is no crash loop, the CT
    never died by itself. (A fence stop and a reboot are not counted either: the
    simulator's seed 21, an HN fencing five times in a partition, once left every
    CT of the rack down.)"""
    loop.executor.answer = True
    starts = converge(loop)
    up = {hn: {c for c, h in starts.items() if h == hn} for hn in HNS}
    acme = starts[1006]
    for _ in range(8):  # the CT never comes up
        loop.reports({**up, acme: up[acme] - {1006}}, {acme: {1006}})
        loop.step(1.0)
        loop.step(0.0)
    assert not any(line.startswith("CRASH LOOP") for line in loop.events.lines)
    assert len([a for a in loop.executor.submitted if a.ctid == 1006]) > 5  # retried past the limit


def test_a_restarted_manager_takes_no_report_older_than_the_ones_the_store_kept(loop: Loop) -> None:
    """A captured report replayed to a restarted manager is dropped (the receiver
    is seeded from the store), while the HNs' next reports are taken in."""
    converge(loop)
    kept = persist.observed(loop.cli, 101).reports[HNS[0]].seq  # the newest report body the store holds
    old = Loop(loop.path, lead=False)  # the restarted manager, on the same store
    old.now, old.seq = loop.now + 1, kept - 1
    old.reports()  # a replay of an earlier round
    old.step()
    assert old.m.receiver.drops == {"stale": len(HNS)}
    assert not old.m.leading  # what it heard is no quorum
    old.seq = loop.seq
    old.reports()
    old.step()
    assert old.m.receiver.accepted == len(HNS)
    assert not old.m.leading  # its earlier run's lease is live: it waits until that ends
    leases.release(loop.cli, leases.current(loop.cli, 101))  # type: ignore[arg-type]  # (its ttl ran out)
    old.step(1.0)
    assert old.m.leading and leases.current(old.cli, 101).epoch > loop.m.leadership.last_epoch  # type: ignore[union-attr]
