#!/usr/bin/env python3
"""Continuous backup benchmark (issue: continuous backup of every CT's /data): the
real ctbackup daemon (inotify, borg 1.2) on 100 CT folders of a storage node,
into a repository behind a real sshd on loopback whose forced command is the
backup node's (`borg serve --append-only --restrict-to-repository`), with the
daemon's default limits (20 MiB/s upload, nice 10, ionice 7, held while the
node's I/O pressure is high). Needs root (sshd) and borg.

- RPO: 100 CTs of 1,000 files each; a writer rewrites a random file of a random
  CT ten times a second. For every write, the time until a restore point holds
  it (the first archive naming its CT whose cycle started after it). Target:
  p99 <= 60 s (the seed's is 15 minutes).
- work per cycle, in the same run: one cycle of the event-driven daemon (the
  CTs just written to, 1 and then 10, as the daemon would batch them) against a
  plain full backup of every /data with the same tool (borg create of all the
  CTs, files cache on: what a cron job runs), alternating, three of each. Goal:
  >= 10x less work (wall and CPU time; the files borg looked at are shown too).
- fsync latency of an application (4 KiB written and fsynced every 20 ms, in one
  CT's folder) while the writer runs, in alternating windows with the daemon
  paused (SIGSTOP) and running, so the shared machine's drift falls on both.
  Target: p99 running <= 1.2 x paused. For scale, the same windows with a loop of
  `python3 -c pass` at nice 19 instead: what any process starting costs the probe.
- restore of 1 GiB in 10,000 files (`ctbackup restore --to`, over SSH). Target:
  <= 60 s.

The backup node's disk is a tmpfs of its own and its sshd runs at nice 19 (on real
machines it is another host: its writes and CPU are not the storage node's).

Usage: python bench/bench_backup.py [--cts 100] [--files 1000] [--seconds 180] [--no-record] [--smoke]
(--smoke: 2 CTs of 20 files, 5 s of writer, one cycle-vs-full pair (1 CT changed),
one 2.5 s window of each kind, one restore of 1 MiB in 100 files; see bench/README.md)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import emit, parse_args  # noqa: E402

from ctmanager.backupnode import borg  # noqa: E402
from ctmanager.backupnode.config import load  # noqa: E402
from ctmanager.lab.backupnodes import ctbackup_toml  # noqa: E402
from ctmanager.lab.layout import ctbackup_path  # noqa: E402

FILES = 1000        # per CT (--files)
BIG_FILES = 10_000  # the restore's CT: 1 GiB in these (--smoke: 1 MiB in 100)
BIG_CT = 5000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    """A storage node's data folder, its ctbackup config and a backup node (sshd on loopback)."""

    def __init__(self, base: Path) -> None:
        self.base, self.port = base, free_port()
        self.data, self.repo = base / "data", base / "backup" / "repos" / "bench" / "storage-bench"
        self.data.mkdir(parents=True)
        (base / "backup").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4g,mode=0700", "ctm-bench-backup", str(base / "backup")],
                       check=True)
        self.repo.parent.mkdir(parents=True)
        for key in ("host", "node"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / key)], check=True)
        pub = (base / "node.pub").read_text().strip()
        (base / "authorized_keys").write_text(
            f'restrict,command="borg serve --append-only --restrict-to-repository {self.repo}" {pub}\n')
        os.chmod(base / "authorized_keys", 0o600)
        kind, body = (base / "host.pub").read_text().split()[:2]
        (base / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {kind} {body}\n")
        (base / "pass").write_text("bench-passphrase\n")
        os.chmod(base / "pass", 0o600)
        (base / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1:{self.port}\nHostKey {base / 'host'}\nPidFile {base / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {base / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            f"SetEnv TMPDIR={base / 'backup'}\n")
        Path("/run/sshd").mkdir(exist_ok=True)
        self.sshd = subprocess.Popen(["nice", "-n", "19", "/usr/sbin/sshd", "-D", "-e", "-f", str(base / "sshd_config")],
                                     stderr=open(base / "sshd.log", "w"))
        self.config = base / "ctbackup.toml"
        self.config.write_text(ctbackup_toml("storage-bench", self.data, base / "state",
                                             f"ssh://root@127.0.0.1:{self.port}{self.repo}", base / "node",
                                             base / "known_hosts", base / "pass"))
        self.cfg = load(self.config)
        self.daemon: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.daemon = subprocess.Popen([ctbackup_path(), "--config", str(self.config), "run"],
                                       stderr=open(self.base / "ctbackup.log", "a"), start_new_session=True)

    def pause(self, paused: bool) -> None:
        """SIGSTOP / SIGCONT the daemon and its borg and ssh."""
        if self.daemon is not None:
            os.killpg(self.daemon.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def stop(self) -> None:
        if self.daemon is not None:
            self.pause(False)
            self.daemon.send_signal(signal.SIGTERM)
            self.daemon.wait(timeout=300)
            self.daemon = None

    def close(self) -> None:
        self.stop()
        self.sshd.terminate()
        self.sshd.wait(timeout=30)
        subprocess.run(["umount", str(self.base / "backup")], check=False)

    def ctbackup(self, *args: str, timeout: float = 600) -> dict:
        p = subprocess.run([ctbackup_path(), "--config", str(self.config), *args], capture_output=True, text=True,
                           timeout=timeout)
        got = json.loads(p.stdout)
        if not got.get("ok"):
            raise SystemExit(f"ctbackup {' '.join(args)}: {got.get('error')}")
        return got

    def points(self) -> list[tuple[float, set[int]]]:
        log = Path(self.cfg.state_dir) / "points.jsonl"
        lines = log.read_text().splitlines() if log.exists() else []
        return sorted((float(d["at"]), set(d["ctids"])) for d in map(json.loads, lines))

    def wait_all(self, ctids: list[int], after: float, timeout: float) -> float:
        """Until every CT has a point started after `after`; returns when."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            have: set[int] = set().union(*[c for at, c in self.points() if at > after])
            if set(ctids) <= have:
                return time.time()
            time.sleep(0.5)
        raise SystemExit(f"not every CT backed up within {timeout:g} s (see {self.base / 'ctbackup.log'})")


def fill(data: Path, cts: int) -> list[int]:
    ctids = list(range(1000, 1000 + cts))
    for c in ctids:
        for f in range(FILES):
            d = data / str(c) / str(f % 10)
            d.mkdir(parents=True, exist_ok=True)
            (d / str(f)).write_bytes(os.urandom(1024))
    return ctids


class Writer(threading.Thread):
    """Rewrites a random file of a random CT every `every` s; records (time, CTID)."""

    def __init__(self, data: Path, ctids: list[int], every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.data, self.ctids, self.every = data, ctids, every
        self.stop, self.writes = threading.Event(), []  # type: threading.Event, list[tuple[float, int]]

    def run(self) -> None:
        rnd = random.Random(7)
        while not self.stop.wait(self.every):
            c, f = rnd.choice(self.ctids), rnd.randrange(FILES)
            (self.data / str(c) / str(f % 10) / str(f)).write_bytes(os.urandom(1024))
            self.writes.append((time.time(), c))


class Probe(threading.Thread):
    """An application's fsync: 4 KiB written and fsynced every 20 ms; latencies in ms."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.stop = path, threading.Event()
        self.ms: list[tuple[float, float]] = []  # (when, fsync ms)

    def run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            while not self.stop.wait(0.02):
                os.write(fd, os.urandom(4096))
                t = time.perf_counter()
                os.fsync(fd)
                self.ms.append((time.monotonic(), (time.perf_counter() - t) * 1000))
        finally:
            os.close(fd)


def covered(node: Node, writes: list[tuple[float, int]], timeout: float) -> list[float]:
    """For every write, the time until the first restore point of its CT started after it."""
    deadline = time.monotonic() + timeout
    while True:
        points = node.points()
        lags = [next((a for a, cts in points if a > t and c in cts), -1.0) - t for t, c in writes]
        missing = [w for w, lag in zip(writes, lags) if lag < -0.5]
        if not missing:
            return lags
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(missing)} writes are in no restore point {timeout:g} s after the writer stopped")
        time.sleep(1)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def windows(node: Node, ctids: list[int], switch: Callable[[bool], None], count: int = 4,
            seconds: float = 15.0) -> tuple[list[float], list[float]]:
    """fsync latencies (ms) with `switch(False)` and `switch(True)` in alternating windows,
    the writer running throughout; the first second of each window is left out."""
    writer, probe = Writer(node.data, ctids), Probe(node.data / str(ctids[0]) / "app.log")
    writer.start()
    probe.start()
    spans: list[tuple[bool, float, float]] = []
    try:
        for i in range(2 * count):
            on = i % 2 == 1
            switch(on)
            t = time.monotonic()
            time.sleep(seconds)
            spans.append((on, t + 1, time.monotonic()))
    finally:
        switch(False)
        writer.stop.set()
        probe.stop.set()
        writer.join()
        probe.join()
    pick = [[ms for at, ms in probe.ms if any(o == on and a <= at < b for o, a, b in spans)] for on in (False, True)]
    return pick[0], pick[1]


class Spawner:
    """The reference load: `python3 -c pass` started over and over at nice 19."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def __call__(self, on: bool) -> None:
        if on and self.proc is None:
            self.proc = subprocess.Popen(["nice", "-n", "19", "sh", "-c", f"while :; do {sys.executable} -c pass; done"],
                                         start_new_session=True)
        elif not on and self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None


def rpo_phase(node: Node, ctids: list[int], seconds: float) -> Writer:
    writer = Writer(node.data, ctids)
    node.start()
    writer.start()
    time.sleep(seconds)
    writer.stop.set()
    writer.join()
    return writer


@dataclass
class Runs:
    """borg creates of one kind: wall and CPU seconds (borg's and its SSH's), files looked at."""
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    files: int = 0


def timed_create(node: Node, ctids: list[int], into: Runs) -> None:
    env = {**os.environ, **borg.env(node.cfg.repo)}
    argv = borg.create_argv(node.cfg.repo, borg.archive_name("storage-bench", time.time()), ctids,
                            node.cfg.limits.upload >> 10)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(argv, cwd=node.cfg.data, env=env, capture_output=True, text=True, timeout=900)
    into.wall.append(time.perf_counter() - t)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    into.cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    if p.returncode not in (borg.OK, borg.WARNING):
        raise SystemExit(f"borg create: {p.stderr.strip()[-300:]}")
    into.files = borg.parse_create(p.stdout).files


def cycle_vs_full(node: Node, ctids: list[int], changed: int, runs: int = 3) -> tuple[Runs, Runs]:
    """borg create of the `changed` CTs just written to (what a daemon cycle takes) vs of
    every CT (what a cron job runs, files cache on), alternating; the daemon stopped."""
    rnd = random.Random(11 + changed)
    event, full = Runs(), Runs()
    for i in range(runs * 2):
        touched = sorted(rnd.sample(ctids, changed))
        for c in touched:
            f = rnd.randrange(FILES)
            (node.data / str(c) / str(f % 10) / str(f)).write_bytes(os.urandom(1024))
        timed_create(node, touched if i % 2 == 0 else ctids, event if i % 2 == 0 else full)
    return event, full


def cycle_rows(compared: dict[int, tuple[Runs, Runs]]) -> list[tuple[str, str, str, str, str]]:
    med = statistics.median
    rows: list[tuple[str, str, str, str, str]] = []
    for n, (event, full) in compared.items():
        ratio = med(full.wall) / med(event.wall)
        rows += [
            (f"event-driven cycle ({n} CT{'s' if n > 1 else ''} changed)", f"{min(event.wall):.2f} s",
             f"{med(event.wall):.2f} s", "-", "-"),
            ("full backup of every /data", f"{min(full.wall):.2f} s", f"{med(full.wall):.2f} s", "-", "-"),
            ("  full / event-driven (wall time)", "-", f"{ratio:.1f}x", ">= 10x", "yes" if ratio >= 10 else "NO"),
            ("  full / event-driven (CPU time)", "-", f"{med(full.cpu) / med(event.cpu):.1f}x", "-", "-"),
            ("  files looked at: event / full", "-", f"{event.files} / {full.files}", "-", "-"),
        ]
    return rows


def main() -> None:
    global FILES
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cts", type=int, default=100)
    ap.add_argument("--files", type=int, default=FILES, help=f"files of 1 KiB per CT (default {FILES})")
    ap.add_argument("--seconds", type=float, default=180.0, help="the writer's time with the daemon (RPO phase)")
    args = parse_args(ap, cts=2, files=20, seconds=5.0)
    FILES = args.files
    runs, count, window = (1, 1, 2.5) if args.smoke else (3, 4, 15.0)  # cycle-vs-full pairs; fsync windows
    big_files, big_bytes = (100, 1 << 20) if args.smoke else (BIG_FILES, 1 << 30)
    if os.geteuid() != 0 or not shutil.which("borg"):
        raise SystemExit("bench_backup needs root and borg (bash scripts/setup.sh)")
    base = Path(tempfile.mkdtemp(prefix="ctm-bench-backup-"))
    node = Node(base)
    try:
        print(f"bench: {args.cts} CTs x {FILES} files of 1 KiB in {node.data}", flush=True)
        ctids = fill(node.data, args.cts)
        t0 = time.time()
        node.start()
        node.wait_all(ctids, 0, 1800)
        initial = time.time() - t0
        node.stop()
        print(f"bench: initial backup {initial:.0f} s; cycle vs full...", flush=True)
        compared = {n: cycle_vs_full(node, ctids, n, runs) for n in ((1,) if args.smoke else (1, 10))}
        print(f"bench: writer with the daemon ({args.seconds:g} s)...", flush=True)
        writer = rpo_phase(node, ctids, args.seconds)
        last = max(t for t, _ in writer.writes)
        lags = covered(node, writer.writes, 300)
        cycles = sum(1 for a, _ in node.points() if writer.writes[0][0] <= a <= last)
        print(f"bench: fsync probe, the daemon paused and running in turns ({2 * count * window:g} s)...", flush=True)
        quiet, busy = windows(node, ctids, lambda on: node.pause(not on), count, window)
        node.stop()
        print(f"bench: fsync probe, a nice-19 loop of process starts off and on in turns ({2 * count * window:g} s)...",
              flush=True)
        calm, spawning = windows(node, ctids, Spawner(), count, window)
        print(f"bench: {big_bytes >> 20} MiB in {big_files:,} files, backed up, then restored...", flush=True)
        big = node.data / str(BIG_CT)
        for f in range(big_files):
            d = big / str(f % 100)
            d.mkdir(parents=True, exist_ok=True)
            (d / str(f)).write_bytes(os.urandom(big_bytes // big_files))
        pick = big_files * 42 // 100 + 7  # 4207 of 10,000
        sample_path = Path(str(pick % 100)) / str(pick)
        sample = hashlib.sha256((big / sample_path).read_bytes()).hexdigest()
        wrote = time.time()
        node.start()
        node.wait_all([BIG_CT], wrote, 1800)
        node.stop()
        restores = []
        for i in range(1 if args.smoke else 2):
            into = base / f"restore-{i}"
            t = time.perf_counter()
            node.ctbackup("restore", str(BIG_CT), "--to", str(into), timeout=1800)
            restores.append(time.perf_counter() - t)
            if hashlib.sha256((into / str(BIG_CT) / sample_path).read_bytes()).hexdigest() != sample:
                raise SystemExit("the restored file differs")
            shutil.rmtree(into)
    finally:
        node.close()
    fsync_ratio = pct(busy, 0.99) / pct(quiet, 0.99)
    spawn_ratio = pct(spawning, 0.99) / pct(calm, 0.99)
    intro = [f"The real ctbackup daemon (inotify, borg 1.2.4, lz4, repokey-blake2) on {args.cts} CT folders of "
             f"{FILES} files of 1 KiB; the repository behind an sshd on loopback with the backup node's forced "
             "command (borg serve --append-only), the backup node's disk a tmpfs of its own and its sshd at nice 19; default limits (20 MiB/s upload, nice 10, ionice 7, held while "
             f"PSI io some avg10 > 40 %, 20 s at most). Writer: a random file of a random CT every 0.1 s, "
             f"{len(writer.writes)} writes in {args.seconds:g} s, {cycles} restore points made meanwhile. "
             f"Initial backup of the {args.cts * FILES} files: {initial:.0f} s. The fsync probe runs in one CT's "
             "folder on the storage node's file system (the folder a CT's /data binds), not through a CT, in "
             f"alternating {window:g} s windows ({count} of each).", ""]
    rows = [
        ("write -> restore point holding it", f"{min(lags):.1f} s", f"{statistics.median(lags):.1f} s",
         "p99 <= 60 s", "yes" if pct(lags, 0.99) <= 60 else "NO"),
        ("  p99 / max", "-", f"{pct(lags, 0.99):.1f} s / {max(lags):.1f} s", "-", "-"),
        *cycle_rows(compared),
        ("fsync p99 daemon paused / running", "-", f"{pct(quiet, 0.99):.2f} / {pct(busy, 0.99):.2f} ms", "-", "-"),
        ("  running / paused", "-", f"{fsync_ratio:.2f}x", "<= 1.2x", "yes" if fsync_ratio <= 1.2 else "NO"),
        ("fsync p99 without / with process starts at nice 19", "-",
         f"{pct(calm, 0.99):.2f} / {pct(spawning, 0.99):.2f} ms", "-", "-"),
        ("  with / without (this machine's floor)", "-", f"{spawn_ratio:.2f}x", "-", "-"),
        (f"restore {big_bytes >> 20} MiB in {big_files:,} files", f"{min(restores):.1f} s",
         f"{statistics.median(restores):.1f} s",
         "<= 60 s", "yes" if max(restores) <= 60 else "NO"),
    ]
    emit("continuous backup", intro, rows, record=not args.no_record, smoke=args.smoke)
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
