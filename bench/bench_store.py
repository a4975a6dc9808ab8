#!/usr/bin/env python3
"""Store benchmarks (issue: a DC-wide store on PostgreSQL). Not a test: prints
figures and appends them to bench/RESULTS.md with the machine noted. Both
backends in one run: SQLite in a temporary file, PostgreSQL in a private cluster
(unix socket, fsync off: the server's own disk speed is not what is measured).

  - edit -> action: a configuration edit committed on one connection (the CLI's)
    until the manager daemon, running its real loop with the store's change
    signal, hands the action it implies to its executor. Median <= 50 ms on
    PostgreSQL (NOTIFY), <= 100 ms on SQLite (the counter, checked every 50 ms).
    The HNs are test ports that report every 100 ms and run what they are told.

  - ctmailmap follows an edit: `tenant add` committed until ctmailmap (its own
    process, on the same store) answers for the new tenant's mailbox. <= 100 ms
    on either backend.

  - a DC of 16 racks x 40 HNs x 10,000 CTs (bench_foundation's), copied onto
    PostgreSQL with `store copy`: `ctmanager status --json`, whole process,
    <= 0.5 s (SQLite beside it, same run).
  - one manager's steady-state writes at 200 HNs and 10,000 CTs, every HN
    reporting each second and nothing changing: rows written per second, by
    table (only rows that changed should be).

Usage: python bench/bench_store.py [--samples N] [--skip-dc] [--no-record] [--smoke]
(--smoke: 2 samples; the DC parts on 2 racks x 4 nodes x 50 CTs and a rack of 5 HNs
and 50 CTs, 2 s of steady state; see bench/README.md)
"""

from __future__ import annotations

import argparse
import select
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import Row, emit, parse_args

from ctmanager.executor.runner import Result
from ctmanager.executor.ssh import SshSettings
from ctmanager.fencing.quorum import MANAGER
from ctmanager.lab.pgserver import Cluster
from ctmanager.manager.config import ManagerConfig
from ctmanager.manager.daemon import Manager
from ctmanager.manager.ports import ManagerEnv
from ctmanager.operations import inventory
from ctmanager.reconcile.state import Action, Settings
from ctmanager.store import open_store, queries
from ctmanager.store.db import Locator
from ctmanager.store.watch import open_watch
from ctmanager.wire.reports import CtState, Metrics, Receiver, Report

EXAMPLE = ROOT / "templates" / "dc" / "example.toml"
KEY = b"bench-key-0123456789abcdef012345"
HNS = ("hn-101-1", "hn-101-2", "hn-101-3")
METRICS = Metrics(0.1, 512 << 30, 500 << 30, 4 << 40, 3 << 40, 0)


class Rack:
    """HNs as test ports: each reports every `every` s what it runs, and runs (at
    once) what the manager tells it; the executor notes when it was told."""

    def __init__(self, hns: Sequence[str] = HNS, every: float = 0.1, slot: int = 101) -> None:
        self.hns, self.every, self.slot = tuple(hns), every, slot
        self.running: dict[int, str] = {}
        self.since: dict[int, float] = {}
        self.lock = threading.Lock()
        self.seq, self.last = 0, 0.0
        self.told: list[tuple[float, Action]] = []
        peers = {MANAGER: 0.05, **{h: 0.05 for h in self.hns[:8]}}  # quorum needs a majority of the voters
        self.heard = {hn: {k: v for k, v in peers.items() if k != hn} for hn in self.hns}

    # Transport
    def receive(self, receiver: Receiver, now: float) -> list[Report]:
        if now - self.last < self.every:
            return []
        self.last, self.seq = now, self.seq + 1
        out = []
        with self.lock:
            by_hn: dict[str, list[CtState]] = {hn: [] for hn in self.hns}
            for c, h in self.running.items():
                by_hn[h].append(CtState(c, "UP", self.since[c]))
            for hn in self.hns:
                r = Report(self.slot, hn, "0123456789abcdef", self.seq, now, False, METRICS,
                           tuple(sorted(by_hn[hn])), False, self.heard[hn])
                if receiver.accept(r, hn, now) is not None:
                    out.append(r)
        return out

    def send(self, report: Report, to: Sequence[tuple[str, int]]) -> None:
        pass

    def wait(self, timeout: float, also: Sequence[int] = ()) -> None:
        select.select(list(also), [], [], max(min(timeout, 0.1), 0.0))

    # Executor
    def submit(self, actions: Iterable[Action], spec_of: Any, done: Callable[[Any], None], epoch: int = 0) -> None:
        at = time.perf_counter()
        for a in actions:
            self.told.append((at, a))
            with self.lock:
                if a.kind == "start":
                    self.running[a.ctid] = a.hn
                    self.since[a.ctid] = time.time()
                elif a.kind in ("stop", "destroy"):
                    self.running.pop(a.ctid, None)
            done(Result(a, "done", "ok", 0.0))

    def close(self) -> None:
        pass


class Quiet:
    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *a, **k: None


def edit_to_action(locator: Locator, samples: int, *, signal: bool = True) -> list[float]:
    with open_store(locator, create=True) as s, s.transaction():
        inventory.init(s, EXAMPLE)
    rack = Rack()
    store = open_store(locator)
    config = ManagerConfig(file="bench", slot=101, listen=("127.0.0.1", 0), key=KEY, agent_command=("ctagent",),
                           ssh=SshSettings("root", "/k", "/kh"), action_timeout=30.0, concurrency=4,
                           settings=Settings(), full_plan_every=10.0, metrics_prefix="bench")
    env = ManagerEnv(store, rack, rack, events=Quiet(), receiver=Receiver(KEY, 101),  # type: ignore[arg-type]
                     watch=open_watch(locator) if signal else None)
    m = Manager(queries.dc_template(store), config, env, holder="bench")
    thread = threading.Thread(target=m.run, daemon=True)
    thread.start()
    cli = open_store(locator)
    dc = queries.dc_template(cli)

    def wait_for(cond: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 30
        while not cond():
            if not thread.is_alive():
                raise SystemExit(f"bench_store: the manager's loop ended (see above) waiting for {what}")
            if time.monotonic() > deadline:
                raise SystemExit(f"bench_store: timed out waiting for {what}")
            time.sleep(0.005)
    wait_for(lambda: len(rack.running) == 8, "the rack to converge")
    time.sleep(0.5)
    acme = queries.find_ct(cli, "acme")
    out = []
    for i in range(samples):
        admst = "DOWN" if i % 2 == 0 else "UP"
        told = len(rack.told)
        with cli.transaction():
            inventory.Inventory(cli, dc).set_ct(str(acme.ctid), admst=admst)
        committed = time.perf_counter()
        wait_for(lambda: len(rack.told) > told, f"the action for admst {admst}")
        out.append(rack.told[told][0] - committed)
        time.sleep(0.15)  # apart, like edits by a person
    m.stop()
    thread.join(10)
    cli.close()
    return out


def mailmap_follows(locator: Locator, samples: int) -> list[float]:
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ctmanager.proxies.mailmap", "--store", str(locator), "--listen",
                             f"127.0.0.1:{port}"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("bench_store: ctmailmap did not listen") from None
                time.sleep(0.05)
        f = conn.makefile("rwb")

        def ask(key: str) -> bytes:
            f.write(f"get {key}\n".encode())
            f.flush()
            return f.readline()
        cli = open_store(locator)
        dc = queries.dc_template(cli)
        out = []
        for i in range(samples):
            name = f"bench{i}"
            with cli.transaction():
                inventory.Inventory(cli, dc).add_tenant(name, 101, ("jira",), dc.defaults)
            committed = time.perf_counter()
            while not ask(f"jira@{name}.{dc.tenant_zone}").startswith(b"200 lmtp"):
                if time.perf_counter() - committed > 10:
                    raise SystemExit("bench_store: ctmailmap never answered for the new tenant")
                time.sleep(0.001)
            out.append(time.perf_counter() - committed)
        conn.close()
        cli.close()
        return out
    finally:
        proc.terminate()
        proc.wait(10)


def status_whole_process(locator: Locator, repeat: int = 5) -> list[float]:
    import os
    import subprocess

    env = {**os.environ, "CTMANAGER_STORE": str(locator)}
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ctmanager", "status", "--json"], env=env, cwd=ROOT,
                       stdout=subprocess.DEVNULL, check=True)
        out.append(time.perf_counter() - t0)
    return sorted(out)


def big_rack(work: Path, hns: int, cts: int) -> Path:
    """One rack of `hns` compute HNs (and a storage node) with `cts` tenant CTs, on SQLite."""
    from ctmanager.dc.model import NodeSpec

    text = (ROOT / "templates/dc/example.toml").read_text()
    (work / "dc.toml").write_text(text[: text.index("[[racks]]")])
    path = work / "rack.db"
    with open_store(path, create=True) as store, store.transaction():
        dc = inventory.init(store, work / "dc.toml")
        inv = inventory.Inventory(store, dc)
        nodes = tuple(NodeSpec(p, "storage" if p == hns + 1 else "compute", f"SN101X{p:03d}", f"52:54:00:65:00:{p:02x}")
                      for p in range(1, hns + 2))
        inv.install_rack(101, nodes, "bench")
        have = store.one("SELECT count(*) FROM cts")[0]
        for i in range(cts - have):
            inv.add_tenant(f"t{i:05d}", 101, ("jira",), dc.defaults)
    return path


def steady_writes(locator: Locator, hns: list[str], seconds: float, settle: float = 12.0, converge: float = 300.0
                  ) -> tuple[float, dict[str, int], int]:
    """(rows/s, rows by table, reports/s) a converged manager writes while nothing changes."""
    rack = Rack(hns, every=1.0)
    store = open_store(locator)
    written: dict[str, int] = {}
    counting = threading.Event()
    real_execute, real_many = store.execute, store.executemany

    def note(sql: str, n: int) -> None:
        if counting.is_set() and n > 0 and sql.split()[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            words = sql.replace("(", " ").split()
            table = words[1] if words[0].upper() == "UPDATE" else words[2]
            written[table] = written.get(table, 0) + n

    def execute(sql: str, params: Any = ()) -> Any:
        cur = real_execute(sql, params)
        note(sql, max(cur.rowcount, 0))
        return cur

    def executemany(sql: str, rows: Any) -> None:
        rows = list(rows)
        real_many(sql, rows)
        note(sql, len(rows))
    store.execute, store.executemany = execute, executemany  # type: ignore[method-assign]
    config = ManagerConfig(file="bench", slot=101, listen=("127.0.0.1", 0), key=KEY, agent_command=("ctagent",),
                           ssh=SshSettings("root", "/k", "/kh"), action_timeout=30.0, concurrency=64,
                           settings=Settings(), full_plan_every=10.0, metrics_prefix="bench")
    env = ManagerEnv(store, rack, rack, events=Quiet(), receiver=Receiver(KEY, 101),  # type: ignore[arg-type]
                     watch=open_watch(locator))
    m = Manager(queries.dc_template(store), config, env, holder="bench")
    want = len(queries.cts(store, rack=101))  # before the loop starts: from then on its thread owns the connection
    thread = threading.Thread(target=m.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + converge
    while len(rack.running) < want or len(rack.told) != want:
        if not thread.is_alive():
            raise SystemExit("bench_store: the manager's loop ended (see above) before the big rack converged")
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_store: the big rack did not converge ({len(rack.running)}/{want})")
        time.sleep(0.2)
    time.sleep(settle)  # a full plan and the status rows settle
    seq0 = rack.seq
    counting.set()
    time.sleep(seconds)
    counting.clear()
    reports = (rack.seq - seq0) * len(hns) / seconds
    m.stop()
    thread.join(20)
    return sum(written.values()) / seconds, written, int(reports)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--skip-dc", action="store_true", help="only the latency parts (the DC parts build stores: ~2 min)")
    args = parse_args(ap, samples=2)
    base = Path(tempfile.mkdtemp(prefix="ctm-bench-store-"))
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="ctm-bench-pg-"))).start()  # its own folder: postgres must reach it
    rows: list[Row] = []
    try:
        for name, locator, target, signal in (
                ("SQLite", base / "ctm.db", 0.100, True),
                ("PostgreSQL", cluster.create_database("bench"), 0.050, True),
                ("SQLite without the change signal (before: checked every 0.5 s)", base / "old.db", None, False)):
            got = sorted(edit_to_action(locator, args.samples, signal=signal))
            rows.append(_row(f"edit -> action, {name}", got, target))
        for name, locator in (("SQLite", base / "ctm.db"), ("PostgreSQL", cluster.url("bench"))):
            rows.append(_row(f"ctmailmap follows tenant add, {name}", sorted(mailmap_follows(locator, args.samples)),
                             0.100))
        if not args.skip_dc:
            rows += dc_rows(base, cluster, tiny=args.smoke)
    finally:
        cluster.stop()
        shutil.rmtree(cluster.folder, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
    emit("bench_store: the DC-wide store", ["A ct set --admst committed on the CLI's connection until the manager's "
         "executor is handed the stop or start (the manager's real loop, test HNs reporting every 100 ms).", ""],
         rows, record=not args.no_record, smoke=args.smoke)


def dc_rows(base: Path, cluster: Cluster, *, tiny: bool = False) -> list[Row]:
    """The DC parts; `tiny` (--smoke): the same steps on a DC of 2 racks x 4 nodes x 50 CTs,
    a rack of 5 HNs and 50 CTs, 2 s of steady state after 2 s to settle."""
    import bench_foundation

    from ctmanager.store import copy as storecopy

    racks, nodes, cts = (2, 4, 50) if tiny else (bench_foundation.RACKS, bench_foundation.HNS, bench_foundation.CTS)
    rack_hns, rack_cts = (5, 50) if tiny else (200, 10_000)
    seconds, settle, converge = (2.0, 2.0, 60.0) if tiny else (20.0, 12.0, 300.0)
    rows: list[Row] = []
    (base / "dc").mkdir()
    dc_file = bench_foundation.build_store(base / "dc", racks, nodes, cts)
    dc_url = cluster.create_database("bench_dc")
    storecopy.copy(dc_file, dc_url)
    repeat = 2 if tiny else 5
    lite, pg = status_whole_process(dc_file, repeat), status_whole_process(dc_url, repeat)
    rows.append((f"status --json, whole process, {cts:,} CTs / {racks} racks, SQLite", f"{lite[0]:.2f} s",
                 f"{statistics.median(lite):.2f} s", "-", "-"))
    rows.append((f"status --json, whole process, {cts:,} CTs / {racks} racks, PostgreSQL", f"{pg[0]:.2f} s",
                 f"{statistics.median(pg):.2f} s (x{statistics.median(pg) / statistics.median(lite):.2f} SQLite)",
                 "<= 0.5 s", "yes" if statistics.median(pg) <= 0.5 else "NO"))
    (base / "rack").mkdir()
    rack_file = big_rack(base / "rack", rack_hns, rack_cts)
    rack_url = cluster.create_database("bench_rack")
    storecopy.copy(rack_file, rack_url)
    with open_store(rack_url) as s:
        hns = [n.hostname for n in queries.nodes(s, rack=101) if n.role == "compute"]
    per_s, by_table, reports = steady_writes(rack_url, hns, seconds, settle, converge)
    detail = ", ".join(f"{t} {n / seconds:.0f}/s" for t, n in sorted(by_table.items(), key=lambda kv: -kv[1]))
    rows.append((f"steady-state writes, {rack_hns} HNs / {rack_cts:,} CTs, PostgreSQL ({reports} reports/s)",
                 "-", f"{per_s:.0f} rows/s ({detail or 'none'})", "only changed rows", "-"))
    return rows


def _row(name: str, got: list[float], target: float | None) -> Row:
    med = statistics.median(got)
    return (f"{name} ({len(got)} edits)", f"{got[0] * 1000:.1f} ms",
            f"{med * 1000:.1f} ms (p90 {got[int(len(got) * 0.9) - 1] * 1000:.1f})",
            "-" if target is None else f"<= {target * 1000:.0f} ms",
            "-" if target is None else "yes" if med <= target else "NO")


if __name__ == "__main__":
    main()
