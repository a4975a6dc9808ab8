"""The daemons under systemd (issue 36): sd_notify (ctmanager/sdnotify.py) from each
daemon's own loop, received on a NOTIFY_SOCKET of the test's; log lines with syslog
priorities for journald (ctmanager/daemonlog.py) and today's lines elsewhere; the two
watchdogs of ctagent kept apart; the shipped units say Type=notify and WatchdogSec=."""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ctmanager import daemonlog
from ctmanager.agent import config as agentconfig
from ctmanager.agent.daemon import check_watchdogs
from ctmanager.backupnode import daemon as backupdaemon
from ctmanager.backupnode import scan
from ctmanager.backupnode.daemon import serve
from ctmanager.executor.ssh import SshSettings
from ctmanager.manager.config import ManagerConfig
from ctmanager.manager.daemon import Manager
from ctmanager.manager.ports import ManagerEnv
from ctmanager.operations import inventory
from ctmanager.reconcile.state import Settings
from ctmanager.sdnotify import Notifier
from ctmanager.store import open_store, queries
from ctmanager.wire.reports import Receiver, Report

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "templates" / "dc" / "example.toml"


class Listener:
    """systemd's side: a datagram socket at a path (or an abstract name) and what arrived."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.got: list[str] = []

    def until(self, pred: Any, timeout: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while not pred(self.got):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; received {self.got}")
            try:
                self.got.append(self.sock.recv(4096).decode())
            except TimeoutError:
                pass
        return self.got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    lst = Listener(str(tmp_path / "notify"))
    yield lst
    lst.close()


def kinds(got: list[str]) -> list[str]:
    return [m.split("\n")[0] for m in got]


# ---- sdnotify ------------------------------------------------------------------

def test_outside_systemd_every_call_is_a_no_op() -> None:
    n = Notifier.from_env({})
    assert not n.enabled and n.watchdog == 0.0
    n.ready("x")
    n.status("x")
    n.stopping()
    assert n.alive() is False and n.send("READY=1") is False


def test_the_variables_are_taken_out_of_the_environment_for_the_children() -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid()),
           "PATH": "/bin"}
    n = Notifier.from_env(env)
    assert n.address == "/run/systemd/notify" and n.watchdog == 30.0 and n.interval == 15.0
    assert env == {"PATH": "/bin"}


def test_a_watchdog_meant_for_another_process_is_not_ours() -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, unset=False)
    assert n.enabled and n.watchdog == 0.0 and n.alive() is False


def test_ready_once_then_watchdog_at_half_the_timeout_to_an_abstract_socket() -> None:
    lst = Listener(f"@ctm-test-{os.getpid()}")
    now = [100.0]
    n = Notifier(lst.address, 2_000_000, clock=lambda: now[0])  # WatchdogSec=2s: a ping every 1 s
    try:
        n.ready("serving")
        n.ready("again")  # READY only once
        assert n.alive() is True  # the first turn pings at once
        now[0] += 0.9
        assert n.alive() is False
        now[0] += 0.1
        assert n.alive() is True
        n.stopping()
        assert lst.until(lambda g: len(g) >= 4) == ["READY=1\nSTATUS=serving", "WATCHDOG=1", "WATCHDOG=1",
                                                    "STOPPING=1"]
    finally:
        n.close()
        lst.close()


def test_a_vanished_socket_costs_a_warning_not_the_daemon(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier(str(tmp_path / "gone"), 2_000_000)
    with caplog.at_level(logging.WARNING):
        assert n.send("WATCHDOG=1") is False and n.send("WATCHDOG=1") is False
    n.close()
    assert len([r for r in caplog.records if "cannot notify systemd" in r.getMessage()]) == 1


# ---- each daemon's loop notifies ---------------------------------------------------

def test_ctmailmap_says_ready_once_it_listens_then_pings_from_its_loop(tmp_path: Path, listener: Listener) -> None:
    """The real daemon as systemd starts it: NOTIFY_SOCKET and WATCHDOG_USEC (0.2 s) set."""
    store = tmp_path / "dc.db"
    with open_store(store, create=True) as s, s.transaction():
        inventory.init(s, EXAMPLE)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "200000"}
    err = (tmp_path / "err").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "ctmanager.proxies.mailmap", "--store", str(store),
                             "--listen", f"127.0.0.1:{port}"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=err)
    try:
        got = listener.until(lambda g: kinds(g).count("WATCHDOG=1") >= 3)
        assert got[0] == f"READY=1\nSTATUS=listening on 127.0.0.1:{port}; 3 tenants", got
        assert set(kinds(got)) == {"READY=1", "WATCHDOG=1"}
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:  # READY meant it: it answers
            c.sendall(b"get jira@myhost.example.net\n")
            assert c.recv(100).startswith(b"200 lmtp:")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        err.close()


def test_ctmailmap_logs_with_priorities_to_journald_and_as_before_elsewhere(tmp_path: Path) -> None:
    store = tmp_path / "dc.db"
    with open_store(store, create=True) as s, s.transaction():
        inventory.init(s, EXAMPLE)

    def first_lines(journal: bool) -> list[str]:
        log = tmp_path / f"log-{journal}"
        with log.open("wb") as err, socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()  # its port: ctmailmap cannot listen there, so it logs its start and exits
            st = os.fstat(err.fileno())
            env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}" if journal else f"{st.st_dev}:1"}
            proc = subprocess.Popen([sys.executable, "-m", "ctmanager.proxies.mailmap", "--store", str(store),
                                     "--listen", f"127.0.0.1:{taken.getsockname()[1]}"], cwd=ROOT, env=env,
                                    stdout=subprocess.DEVNULL, stderr=err)
            assert proc.wait(30) == 1
        return log.read_text().splitlines()

    journal, plain = first_lines(True), first_lines(False)
    assert journal[0] == "<6>INFO index rebuilt: 3 tenants", journal
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ctmailmap INFO index rebuilt: 3 tenants", plain[0])


class Executor:
    def submit(self, actions: Any, spec_of: Any, done: Any, epoch: int = 0) -> None:
        raise AssertionError("a standby that hears nobody acts on nothing")

    def close(self) -> None:
        pass


class Transport:
    """The manager's transport with nothing to hear: each wait is a turn of its loop."""

    def __init__(self, turns: int, stop: Any) -> None:
        self.turns, self.stop = turns, stop

    def receive(self, receiver: Receiver, now: float) -> list[Report]:
        return []

    def send(self, report: Report, to: Sequence[tuple[str, int]]) -> None:
        pass

    def wait(self, timeout: float, also: Sequence[int] = ()) -> None:
        time.sleep(0.02)
        self.turns -= 1
        if self.turns <= 0:
            self.stop()


def test_the_manager_is_ready_after_its_first_step_and_pings_from_its_loop(tmp_path: Path,
                                                                           listener: Listener) -> None:
    path = tmp_path / "dc.db"
    with open_store(path, create=True) as s, s.transaction():
        inventory.init(s, EXAMPLE)
    store = open_store(path)
    config = ManagerConfig(file="test", slot=101, listen=("127.0.0.1", 0), key=b"k" * 32, agent_command=("ctagent",),
                           ssh=SshSettings("root", "/k", "/kh"), action_timeout=30.0, concurrency=1,
                           settings=Settings(), full_plan_every=1.0, metrics_prefix="test")
    stopper: list[Manager] = []
    env = ManagerEnv(store, Executor(), Transport(20, lambda: stopper[0].stop()), receiver=Receiver(b"k" * 32, 101))
    notifier = Notifier(listener.address, 40_000)  # a ping every 0.02 s at most
    m = Manager(queries.dc_template(store), config, env, notifier=notifier)
    stopper.append(m)
    try:
        m.run()
    finally:
        store.close()
        notifier.close()
    got = listener.until(lambda g: "STOPPING=1" in kinds(g))
    assert got[0] == "READY=1\nSTATUS=manager manager of rack-101", got
    assert kinds(got)[-1] == "STOPPING=1" and 3 <= kinds(got).count("WATCHDOG=1") <= 21


def test_ctagent_is_ready_after_its_first_report_and_pings_from_its_loop(tmp_path: Path,
                                                                         listener: Listener) -> None:
    """`ctagent run` itself (LXC, no CT), as systemd starts it; SIGTERM as systemd stops it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))  # where its reports go: a manager that never answers
        b.settimeout(10)
        (tmp_path / "key").write_text("00" * 32)
        (tmp_path / "key").chmod(0o600)
        (tmp_path / "agent.toml").write_text(
            f'rack = 101\nhn = "hn-101-1"\nkey_file = "{tmp_path}/key"\nreport_to = ["127.0.0.1:{b.getsockname()[1]}"]\n'
            f'listen = "127.0.0.1:{a.getsockname()[1]}"\nreport_interval = 0.05\nstate_dir = "{tmp_path}/state"\n'
            f'[lxc]\nlxcpath = "{tmp_path}/lxc"\n[fencing]\nwatchdog = "none"\n')
        a.close()
        env = {**os.environ, "NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "40000"}  # a ping every 0.02 s
        with (tmp_path / "err").open("wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "ctmanager.agent.cli", "-c", str(tmp_path / "agent.toml"),
                                     "run"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
            try:
                got = listener.until(lambda g: kinds(g).count("WATCHDOG=1") >= 3)
                assert b.recv(65536)  # READY came after the first report went out
            finally:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(10) == 0
    assert got[0] == "READY=1\nSTATUS=hn-101-1: reporting to 1 voter(s)", got
    assert kinds(listener.until(lambda g: "STOPPING=1" in kinds(g)))[-1] == "STOPPING=1"
    # and with its WatchdogSec far below watchdog_timeout it said so (check_watchdogs)
    assert "ERROR systemd's WatchdogSec (0.04s) is too short" in (tmp_path / "err").read_text()


def test_ctbackup_pings_at_every_turn_of_its_loop() -> None:
    stop = threading.Event()
    turns: list[float] = []

    class Cycle:
        cfg = type("Cfg", (), {"scan_every": 3600})

        def alive(self) -> None:
            turns.append(time.monotonic())
            if len(turns) >= 5:
                stop.set()

        def note(self, now: float) -> None:
            pass

        def rescan(self, now: float) -> list[int]:
            return []

        def log(self, line: str) -> None:
            pass

        def step(self, now: float) -> None:
            return None

        started = 0.0

    serve(Cycle(), stop, tick=0.001)  # type: ignore[arg-type]
    assert len(turns) == 5


def test_ctbackup_pings_before_each_folder_of_a_scan(tmp_path: Path) -> None:
    for sub in ("1005/a/b", "1005/c", "1006", "1007/d"):
        (tmp_path / sub).mkdir(parents=True)
    calls: list[int] = []
    never = {1005: time.time_ns() + 10**12, 1006: time.time_ns() + 10**12}  # unchanged since: every folder is read
    assert scan.due(tmp_path, never, lambda: calls.append(1)) == [1007]
    assert len(calls) == 3 + 4 + 1  # a call per CT, and one per folder listed (1005, a, b, c; 1006)


def test_ctbackup_pings_while_borg_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backupdaemon, "BORG_WAIT", 0.05)
    calls: list[int] = []
    p = backupdaemon.run_borg(["sh", "-c", "sleep 0.4; echo made; echo warn >&2; exit 1"], "/", {},
                              lambda: calls.append(1))
    assert (p.returncode, p.stdout, p.stderr) == (1, "made\n", "warn\n") and len(calls) >= 5


# ---- the two watchdogs of ctagent ----------------------------------------------------

@pytest.mark.parametrize(("service", "node", "interval", "ok"), [
    (0.0, 10.0, 1.0, True),    # no WatchdogSec
    (30.0, 10.0, 1.0, True),   # the shipped unit and timers: 15 - 1 > 10
    (22.0, 10.0, 1.0, False),  # 11 - 1 = 10: systemd could restart it as the node would reset
    (10.0, 10.0, 1.0, False),
    (60.0, 30.0, 1.0, False),  # a longer watchdog_timeout needs a longer WatchdogSec
])
def test_systemd_restarts_a_hung_agent_only_after_the_node_watchdog_fired(service: float, node: float,
                                                                          interval: float, ok: bool) -> None:
    problem = check_watchdogs(service, node, interval)
    assert (problem == "") is ok
    if not ok:
        assert "WatchdogSec" in problem and f"{2 * (node + interval):g}s" in problem


def test_the_shipped_agent_unit_and_config_keep_the_watchdogs_apart(tmp_path: Path) -> None:
    (tmp_path / "rack.key").write_text("ab" * 32 + "\n")
    (tmp_path / "rack.key").chmod(0o600)
    conf = tmp_path / "ctagent.toml"
    conf.write_text((ROOT / "agents" / "ctagent.toml").read_text().replace("/etc/ctagent/rack.key",
                                                                           str(tmp_path / "rack.key")))
    c = agentconfig.load(conf)
    assert check_watchdogs(unit_seconds("agents/ctagent.service", "WatchdogSec"), c.timers.watchdog_timeout,
                           c.report_interval) == ""


# ---- log lines -------------------------------------------------------------------------

def record(level: int, msg: str, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            info = sys.exc_info()
    return logging.LogRecord("x", level, __file__, 1, msg, (), info)


@pytest.mark.parametrize(("level", "msg", "line"), [
    (logging.ERROR, "cannot read the store", "<3>ERROR cannot read the store"),
    (logging.INFO, "index rebuilt: 3 tenants", "<6>INFO index rebuilt: 3 tenants"),
    (logging.WARNING, "lease ttl too long", "<4>WARNING lease ttl too long"),
    (logging.DEBUG, "heard hn-101-1", "<7>DEBUG heard hn-101-1"),
    (logging.CRITICAL, "gone", "<2>CRITICAL gone"),
    (logging.WARNING, "ALARM backups on s: its repository fails", "<3>WARNING ALARM backups on s: its repository fails"),
    (logging.INFO, "ALARM backup failed: x", "<3>INFO ALARM backup failed: x"),
    (logging.CRITICAL, "ALARM worse", "<2>CRITICAL ALARM worse"),
])
def test_journal_lines_carry_the_syslog_priority_and_no_time(level: int, msg: str, line: str) -> None:
    assert daemonlog.JournalFormatter().format(record(level, msg)) == line


def test_every_line_of_a_traceback_carries_the_priority() -> None:
    lines = daemonlog.JournalFormatter().format(record(logging.ERROR, "step failed", exc=True)).split("\n")
    assert len(lines) > 2 and all(x.startswith("<3>") for x in lines) and lines[-1] == "<3>ValueError: boom"


def test_journal_lines_only_when_journal_stream_is_stderr_itself(tmp_path: Path) -> None:
    with (tmp_path / "err").open("w") as stream, (tmp_path / "other").open("w") as other:
        st, ot = os.fstat(stream.fileno()), os.fstat(other.fileno())
        assert daemonlog.under_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        for value in (f"{ot.st_dev}:{ot.st_ino}", "", "junk", f"{st.st_dev}:", f"{st.st_ino}"):
            assert not daemonlog.under_journal(stream, {"JOURNAL_STREAM": value}), value
        assert not daemonlog.under_journal(stream, {})
        assert isinstance(daemonlog.formatter("ctagent", stream=stream, environ={
            "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}), daemonlog.JournalFormatter)
    assert not daemonlog.under_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})  # no file descriptor


def test_elsewhere_the_lines_are_todays() -> None:
    f = daemonlog.formatter("ctagent", environ={})
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ctagent ERROR cannot pet",
                        f.format(record(logging.ERROR, "cannot pet")))
    b = daemonlog.formatter("ctbackup", environ={}, fmt="%(asctime)s ctbackup: %(message)s",
                            datefmt="%Y-%m-%dT%H:%M:%SZ", utc=True)
    r = record(logging.INFO, "inventory scan")
    assert b.format(r) == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.created)) + " ctbackup: inventory scan"


# ---- the units -----------------------------------------------------------------------------

UNITS = {"manager/ctmanager.service": "ctmanager", "agents/ctagent.service": "ctagent",
         "proxies/ctmailmap.service": "ctmailmap", "templates/storage/ctbackup.service": "ctbackup"}
SECONDS = {"s": 1, "min": 60}


def settings(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (ROOT / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def unit_seconds(unit: str, key: str) -> float:
    m = re.fullmatch(r"(\d+)(s|min)", settings(unit)[key][0])
    assert m, settings(unit)[key]
    return int(m[1]) * SECONDS[m[2]]


@pytest.mark.parametrize("unit", UNITS)
def test_each_daemon_unit_is_notify_with_a_watchdog(unit: str) -> None:
    s = settings(unit)
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"] and unit_seconds(unit, "WatchdogSec") >= 15
    assert s["ExecStart"][0].split()[0] == f"/usr/bin/{UNITS[unit]}"  # where the Debian package links it
    assert "AF_UNIX" in " ".join(s.get("RestrictAddressFamilies", ["AF_UNIX"]))  # NOTIFY_SOCKET is one


def test_ctmailmap_reads_its_store_password_as_a_credential() -> None:
    s = settings("proxies/ctmailmap.service")
    assert s["DynamicUser"] == ["yes"] and s["LoadCredential"] == ["store.pgpass:/etc/ctmanager/mailmap.pgpass"]
    assert "PGPASSFILE=%d/store.pgpass" in s["Environment"]


def analyze() -> str:
    path = shutil.which("systemd-analyze")
    assert path, "systemd-analyze is part of Debian's systemd package: it is here"
    return path


@pytest.mark.parametrize(("unit", "most"), [("manager/ctmanager.service", 2.0), ("proxies/ctmailmap.service", 2.0),
                                            ("templates/storage/ctbackup.service", 2.5)])
def test_the_sandboxed_units_keep_their_exposure_score(unit: str, most: float) -> None:
    """bench/RESULTS.md, "Issue 36: systemd units": ctagent cannot be sandboxed (LXC)."""
    p = subprocess.run([analyze(), "security", "--offline=true", str(ROOT / unit)], capture_output=True, text=True,
                       timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", p.stdout)
    assert m and float(m[1]) <= most, p.stdout[-2000:] + p.stderr
