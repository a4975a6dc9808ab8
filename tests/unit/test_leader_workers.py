"""The leader-only workers in their steppable shape (manager/ports.Worker): the DNS
publisher (dnsroutes/worker.py) and the backup watch (manager/backups.py). When
they work is plain code with time as an argument, stepped here with a fake
runner that holds each job until the test finishes it: no thread, no sleep.
The jobs themselves run against a real SQLite store, fenced by the lease they
were handed at submit time."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ctmanager.dnsroutes import sync
from ctmanager.dnsroutes.records import Change
from ctmanager.dnsroutes.worker import MAX_BACKOFF, DnsWorker, Synced
from ctmanager.manager.backups import Assessment, BackupWatch, Polled
from ctmanager.manager.config import BackupSettings
from ctmanager.manager.ports import ThreadRunner, Worker
from ctmanager.operations import inventory
from ctmanager.store import backups as known
from ctmanager.store import open_store
from ctmanager.store.lease import Lease

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "templates" / "dc" / "example.toml"
LEASE = Lease(101, "a", "boot", "test", 7, 0.0, 0.0, 0.0)  # held by nobody in the stores made here


class FakeRunner:
    """Holds every job; the test runs it, or hands its `done` an outcome of its own."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, Callable[[Any], None], str]] = []

    def submit(self, job: Callable[[], Any], done: Callable[[Any], None], name: str = "job") -> None:
        self.jobs.append((job, done, name))

    def finish(self, outcome: Any = None) -> Any:
        """The oldest job ends with `outcome` (None: run it for real)."""
        job, done, _ = self.jobs.pop(0)
        outcome = job() if outcome is None else outcome
        done(outcome)
        return outcome


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "dc.db"
    with open_store(path, create=True) as s, s.transaction():
        inventory.init(s, EXAMPLE)
    return path


def ok(applied: int = 0) -> Synced:
    return Synced(sync.SyncReport(applied=[Change("x", "A", None, None)] * applied))


def down(error: str = "Connection refused") -> Synced:
    return Synced(sync.SyncReport(pending=[Change("x", "A", None, None)], error=error))


# ---- the DNS publisher ------------------------------------------------------------

def test_both_workers_are_of_the_one_shape() -> None:
    runner = FakeRunner()
    workers: list[Worker] = [DnsWorker("x.db", runner), BackupWatch("x.db", 101, lambda s: None, BackupSettings(),
                                                                    runner)]
    assert all(w.due(0.0) == math.inf for w in workers)  # never stepped: nothing due


def test_dns_a_standby_publishes_nothing_and_a_poke_waits_for_it_to_lead() -> None:
    runner = FakeRunner()
    w = DnsWorker("x.db", runner)
    w.poke()
    w.step(0.0, False)
    assert runner.jobs == [] and w.due(0.0) == math.inf
    w.step(5.0, True)  # leads now: the pending poke is taken
    [(job, _, name)] = runner.jobs
    assert name == "dns" and job.args == (None, False)  # unfenced (no daemon), no verify yet


def test_dns_syncs_when_poked_one_job_at_a_time_and_a_poke_meanwhile_is_kept() -> None:
    runner = FakeRunner()
    w = DnsWorker("x.db", runner, verify_every=3600)
    w.step(0.0, True)
    assert runner.jobs == [] and w.due(0.0) == 3600.0  # the steady state: nothing until the verify
    w.poke()
    assert w.due(1.0) == 1.0
    w.step(1.0, True)
    w.poke()  # an edit while the job runs
    w.step(1.05, True)
    assert len(runner.jobs) == 1 and w.due(1.05) == pytest.approx(1.15)  # looks for the outcome soon
    runner.finish(ok())
    w.step(1.2, True)  # the outcome taken in, and the kept poke syncs again
    assert len(runner.jobs) == 1
    runner.finish(ok())
    w.step(1.3, True)
    assert runner.jobs == [] and w.due(1.3) == 3600.0


def test_dns_verifies_every_verify_every_while_leading_only() -> None:
    runner = FakeRunner()
    w = DnsWorker("x.db", runner, verify_every=100)
    w.step(0.0, True)
    w.step(99.0, True)
    assert runner.jobs == []
    w.step(100.0, True)
    assert runner.jobs[0][0].args == (None, True)
    runner.finish(ok())
    w.step(101.0, True)
    assert w.due(101.0) == 200.0
    w.step(150.0, False)  # a standby verifies nothing; leading again, a full period first
    w.step(210.0, True)
    assert runner.jobs == [] and w.due(210.0) == 250.0


def test_dns_backs_off_from_1_s_doubling_to_60_s_and_says_an_error_once(caplog: pytest.LogCaptureFixture) -> None:
    runner = FakeRunner()
    w = DnsWorker("x.db", runner)
    w.poke()
    now, waits = 0.0, []
    with caplog.at_level(logging.INFO, logger="ctmanager.dnsroutes.worker"):
        w.step(now, True)
        for _ in range(9):
            runner.finish(down())
            w.step(now, True)  # taken in: no retry yet
            assert runner.jobs == []
            waits.append(w.due(now) - now)
            now = w.due(now)
            w.step(now, True)  # the retry
        assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60] and MAX_BACKOFF == 60
        assert caplog.text.count("dns: 1 change(s) pending: Connection refused; retrying with backoff") == 1
        runner.finish(ok(applied=1))
        w.step(now, True)
    assert "dns: published 1 change(s)" in caplog.text
    assert "dns: the server answers again; nothing pending" in caplog.text
    assert runner.jobs == [] and w.due(now) == 3600.0  # no retry left: the verify is next


def test_dns_a_poke_syncs_at_once_even_while_backing_off() -> None:
    runner = FakeRunner()
    w = DnsWorker("x.db", runner)
    w.poke()
    w.step(0.0, True)
    runner.finish(down())
    w.step(0.0, True)
    assert runner.jobs == [] and w.due(0.0) == 1.0
    w.poke()  # a reload: the change may be publishable now
    assert w.due(0.5) == 0.5
    w.step(0.5, True)
    assert len(runner.jobs) == 1


def test_dns_logs_drift_conflicts_and_a_runner_s_exception(caplog: pytest.LogCaptureFixture) -> None:
    runner = FakeRunner()
    w = DnsWorker("x.db", runner)
    w.poke()
    with caplog.at_level(logging.INFO, logger="ctmanager.dnsroutes.worker"):
        w.step(0.0, True)
        change = Change("smtp.acme.", "CNAME", None, None)
        runner.finish(Synced(sync.SyncReport(applied=[change] * 2, conflicts=[(change, "held by someone else")]),
                             ["smtp.acme. CNAME: was relay-101-1"]))
        w.step(0.1, True)
        w.poke()
        w.step(0.2, True)
        runner.finish(RuntimeError("boom"))
        w.step(0.3, True)
    assert "dns drift repaired: smtp.acme. CNAME: was relay-101-1" in caplog.text
    assert "dns: published 2 change(s)" in caplog.text
    assert "dns conflict: held by someone else" in caplog.text
    assert "dns: 0 change(s) pending: unexpected RuntimeError: boom; retrying with backoff" in caplog.text
    assert w.due(0.3) == pytest.approx(1.3)


def test_dns_a_job_is_fenced_by_the_lease_at_submit_and_none_starts_once_it_is_gone(
        store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = FakeRunner()
    w = DnsWorker(store_path, runner)
    held: list[Lease | None] = [LEASE]
    w.lease_of = lambda: held[0]
    w.poke()
    w.step(0.0, True)
    job = runner.jobs[0][0]
    assert job.args == (LEASE, False)
    held[0] = None  # the lease lapsed: a job in flight keeps the lease it was given; its writes are refused

    def write(store: Any, server: Any, rack: int | None = None) -> sync.SyncReport:
        with store.transaction(config=False):
            pass
        return sync.SyncReport()
    monkeypatch.setattr(sync, "server_of", lambda store: object())
    monkeypatch.setattr(sync, "sync", write)
    got = runner.finish()
    assert "lease" in got.report.error
    w.poke()
    w.step(10.0, True)  # still leading by the loop's word, but no lease to fence a job with: none starts
    assert runner.jobs == [] and w.due(10.0) == math.inf


def test_dns_a_job_without_a_server_configured_does_nothing(store_path: Path) -> None:
    runner = FakeRunner()
    w = DnsWorker(store_path, runner)
    w.poke()
    w.step(0.0, True)
    got = runner.finish()
    assert got.report == sync.SyncReport() and got.drift == []


def test_dns_a_real_thread_runner_brings_the_outcome_back(store_path: Path) -> None:
    w = DnsWorker(store_path, ThreadRunner())
    w.poke()
    w.step(0.0, True)
    for _ in range(500):
        if w.due(0.0) > 1.0:
            break
        threading.Event().wait(0.01)
        w.step(0.0, True)
    assert w.due(0.0) == 3600.0  # no server configured: nothing pending, nothing to retry


# ---- the backup watch -------------------------------------------------------------

class Nodes:
    def __init__(self, status: dict[str, Any] | None = None) -> None:
        self.status_of = status or {"rpo": 60, "daemon": True, "repository_bytes": 10, "cts": [
            {"ctid": 1006, "newest": "a", "at": 0.0}]}
        self.closed = False

    def status(self, node: str) -> dict[str, Any]:
        return self.status_of

    def close(self) -> None:
        self.closed = True


class Metrics:
    def __init__(self) -> None:
        self.sent: list[dict[str, float]] = []

    def send_many(self, values: dict[str, float], timestamp: float | None = None) -> None:
        self.sent.append(dict(values))


def watch(runner: FakeRunner, path: Any = "x.db", nodes: Nodes | None = None,
          metrics: Metrics | None = None) -> BackupWatch:
    return BackupWatch(path, 101, lambda s: nodes or Nodes(), BackupSettings(poll_every=30.0), runner,
                       metrics)  # type: ignore[arg-type]


def test_backups_poll_every_poll_every_while_leading_and_never_as_a_standby() -> None:
    runner = FakeRunner()
    w = watch(runner)
    w.step(0.0, False)
    assert runner.jobs == [] and w.due(0.0) == math.inf
    w.step(1.0, True)  # leads: a poll at once
    assert len(runner.jobs) == 1 and runner.jobs[0][2] == "backups"
    w.step(2.0, True)
    assert len(runner.jobs) == 1 and w.due(2.0) == pytest.approx(2.1)  # one at a time
    runner.finish(Polled(Assessment({}, [], {})))
    w.step(3.0, True)
    assert runner.jobs == [] and w.due(3.0) == 31.0
    w.step(31.0, False)  # no longer leads when it is due: nothing
    assert runner.jobs == [] and w.due(31.0) == math.inf
    w.step(40.0, True)
    assert len(runner.jobs) == 1


def test_backups_says_its_lines_sends_its_metrics_and_says_store_trouble_once(
        caplog: pytest.LogCaptureFixture) -> None:
    runner, metrics = FakeRunner(), Metrics()
    w = watch(runner, metrics=metrics)
    found = Assessment({}, ["ALARM backup of CT 1005 acme on s: newest restore point 121 s old (RPO 60 s)",
                            "backups on s: fine again"], {"backup.acme.age": 121.0})
    with caplog.at_level(logging.INFO, logger="ctmanager.manager.backups"):
        for t, outcome in enumerate([Polled(found), Polled(None, "database is locked"),
                                     Polled(None, "database is locked"), Polled(None, "disk I/O error"),
                                     Polled(Assessment({}, [], {}))]):
            w.step(t * 30.0, True)
            runner.finish(outcome)
        w.step(200.0, True)
    alarm = [r for r in caplog.records if r.getMessage().startswith("ALARM backup of CT 1005")]
    assert len(alarm) == 1 and alarm[0].levelno == logging.WARNING
    assert [r.levelno for r in caplog.records if "fine again" in r.getMessage()] == [logging.INFO]
    assert caplog.text.count("backups: database is locked; retrying") == 1
    assert caplog.text.count("backups: disk I/O error; retrying") == 1
    assert metrics.sent == [{"backup.acme.age": 121.0}, {}]


def test_backups_a_job_records_the_points_and_a_lost_lease_is_refused(store_path: Path) -> None:
    runner, nodes = FakeRunner(), Nodes()
    w = watch(runner, store_path, nodes)
    w.step(0.0, True)
    got = runner.finish()  # unfenced (no daemon)
    assert got.trouble == "" and got.result.points["storage-101-4"][1] == [(1006, "a", 0.0)]
    with open_store(store_path) as s:
        assert known.known(s, 101)[1006].newest == "a"
    w.step(1.0, True)
    w.lease_of = lambda: LEASE  # a lease the store does not hold (another manager leads now)
    w.step(30.0, True)
    assert runner.jobs[0][0].args == (LEASE,)
    got = runner.finish()
    assert "lease" in got.trouble and nodes.closed  # refused; the connection is dropped, opened again next time
    w.lease_of = lambda: None
    w.step(60.0, True)  # the loop still says leading, but there is no lease: nothing starts
    assert runner.jobs == []
    w.close()


def test_backups_close_while_a_job_runs_lets_the_job_close_them(store_path: Path) -> None:
    runner, nodes = FakeRunner(), Nodes()
    w = watch(runner, store_path, nodes)
    w.step(0.0, True)
    runner.finish()
    assert not nodes.closed
    w.close()
    assert nodes.closed
    w.step(30.0, True)  # (a job submitted before the close finds it closed: it opens nothing)
    assert runner.finish() == Polled(None)
