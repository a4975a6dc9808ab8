"""The backup daemon's cycle: take the CTs that changed (watch.Dirty), wait while
the node is busy (up to max_hold), back them up in one archive with borg at low
CPU and I/O priority and a bandwidth limit, record the restore point, and on
failure keep the CTs dirty and retry with a growing pause. Its surroundings —
clock, borg runner, pressure reading — are arguments, so the policy is tested
without borg; the integration tests run it with the real one.

`alive` is called wherever the daemon makes progress: each turn of `serve`, each
folder of a scan, each look for the hooks' answers, and every second while a borg
child runs (borg's SSH gives up on a dead link by itself: ServerAliveInterval).
Under systemd it is the service watchdog's keep-alive (sdnotify), so only a
daemon stuck elsewhere is restarted (templates/storage/ctbackup.service).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import validate as v
from ..files import write_atomic
from . import borg, hook, pressure, scan
from .catalogue import Catalogue, Point
from .config import BackupConfig
from .watch import Dirty

Run = Callable[[list[str], str, dict[str, str]], "subprocess.CompletedProcess[str]"]
Log = Callable[[str], None]
Alive = Callable[[], object]
BORG_WAIT = 1.0  # s between two keep-alives while a borg child runs
RETRY_MAX = 60.0  # s: the longest pause between attempts while the repository fails
STATE_FILE = "daemon.json"
HOLD_SLACK = 5.0  # s: a hold ends this much before a CT's restore point would outgrow the RPO
HOLD_PREFIX = "hold-"  # a restore, check or prune running: <state_dir>/hold-<pid> (restore.holding)


def run_borg(argv: list[str], cwd: str, env: dict[str, str], alive: Alive | None = None) \
        -> subprocess.CompletedProcess[str]:
    """borg, its output captured; `alive` is called every BORG_WAIT s while it runs."""
    if alive is None:
        return subprocess.run(argv, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True)
    with subprocess.Popen(argv, cwd=cwd, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        while True:
            alive()
            try:
                out, err = p.communicate(timeout=BORG_WAIT)  # (again after a timeout: nothing is lost)
                return subprocess.CompletedProcess(argv, p.returncode, out, err)
            except subprocess.TimeoutExpired:
                continue


@dataclass(frozen=True)
class Outcome:
    kind: str            # done | held | failed
    ctids: tuple[int, ...]
    detail: str = ""


class Cycle:
    """One storage node's backups. `step(now)` does at most one backup."""

    def __init__(self, cfg: BackupConfig, catalogue: Catalogue, dirty: Dirty, log: Log,
                 run: Run | None = None, busy: Callable[[], pressure.Busy] | None = None,
                 alive: Alive = lambda: None) -> None:
        self.cfg, self.catalogue, self.dirty, self.log, self.alive = cfg, catalogue, dirty, log, alive
        self.run: Run = run or (lambda argv, cwd, env: run_borg(argv, cwd, env, self.alive))
        self.busy = busy or (lambda: pressure.now(cfg.limits.io_pressure, cfg.limits.load_per_cpu))
        self.env = borg.env(cfg.repo)
        self.held_since: float | None = None
        self.last_took = 0.0  # s the last borg create took
        self.failures = 0
        self.retry_at = 0.0
        self.error = ""       # the repository's last error while it fails ("" when fine)
        self.error_since = 0.0
        self.started = 0.0
        self.hooked_at: dict[int, float] = {}  # CTID -> when its pre-backup hook was last asked
        self.state_file = Path(cfg.state_dir) / STATE_FILE

    def note(self, now: float) -> None:
        """What `ctbackup status` tells of the daemon: its pid and the repository's error."""
        body = {"pid": os.getpid(), "started": self.started, "noted": now,
                "error": self.error, "error_since": self.error_since or None}
        write_atomic(self.state_file, (json.dumps(body) + "\n").encode(), 0o644, sync=False)  # rewritten often

    def _prefix(self) -> list[str]:
        lim = self.cfg.limits
        return ["nice", "-n", str(lim.nice), "ionice", "-c2", "-n", str(lim.ionice)]

    def held_by(self) -> int | None:
        """The pid of a restore, check or prune running now (its hold file; stale ones go)."""
        for mark in Path(self.cfg.state_dir).glob(f"{HOLD_PREFIX}*"):
            pid = mark.name[len(HOLD_PREFIX):]
            if v.is_digits(pid) and Path(f"/proc/{pid}").exists():
                return int(pid)
            mark.unlink(missing_ok=True)
        return None

    def step(self, now: float) -> Outcome | None:
        if now < self.retry_at or self.held_by() is not None:
            return None
        due = [c for c in self.dirty.take(now) if (Path(self.cfg.data) / str(c)).is_dir()]
        if not due:
            return None
        b = self.busy()
        if b.busy:
            if self.held_since is None:
                self.held_since = now
                self.log(f"holding backups: the node is busy ({b.why}); {self.cfg.limits.max_hold:g} s at most")
            late = self.rpo_at_risk(due, now)
            if now - self.held_since < self.cfg.limits.max_hold and not late:
                self.dirty.put_back(due, now)
                return Outcome("held", tuple(due), b.why)
            self.log(f"backing up anyway after {now - self.held_since:.0f} s held ({b.why})"
                     + (f": CT {late}'s restore point would be older than the RPO ({self.cfg.rpo} s)" if late else ""))
        self.held_since = None
        return self._backup(due, now)

    def rpo_at_risk(self, due: list[int], now: float) -> int | None:
        """A due CT whose newest restore point would be older than the RPO before the next
        one lands, were the cycle held any longer (a cycle takes about as long as the last)."""
        newest = self.catalogue.newest
        for c in due:
            if c in newest and now + HOLD_SLACK + self.last_took - newest[c].at >= self.cfg.rpo:
                return c
        return None

    def _hooks(self, due: list[int], now: float) -> float:
        """Ask the CTs with a pre-backup hook (not asked within hook_every); returns when
        the answers came (the restore point is as of then)."""
        data = Path(self.cfg.data)
        ask = {c: data / str(c) for c in due if hook.wanted(data / str(c))
               and now - self.hooked_at.get(c, -1e18) >= self.cfg.hook_every}
        if not ask:
            return now
        started = time.monotonic()
        answers = hook.ask(ask, self.cfg.hook_timeout, sleep=self._sleep)
        for ctid, code in answers.items():
            self.hooked_at[ctid] = now
            if code != 0:
                self.log(f"CT {ctid}: its pre-backup hook " + (f"did not answer in {self.cfg.hook_timeout:g} s"
                         if code is None else f"failed (exit {code})") + "; backed up as it is")
        return now + (time.monotonic() - started)

    def _backup(self, due: list[int], now: float) -> Outcome:
        now = self._hooks(due, now)
        name = borg.archive_name(self.cfg.node, now)
        argv = self._prefix() + borg.create_argv(self.cfg.repo, name, due, self.cfg.limits.upload >> 10)
        took = time.monotonic()
        p = self.run(argv, self.cfg.data, self.env)
        self.last_took = time.monotonic() - took
        if p.returncode != borg.OK and p.returncode != borg.WARNING and borg.missing_repository(p.stderr):
            init = self.run(borg.init_argv(self.cfg.repo), self.cfg.data, self.env)
            if init.returncode == borg.OK:
                self.log(f"initialised the repository {self.cfg.repo.location}")
                p = self.run(argv, self.cfg.data, self.env)
            else:
                p = init
        if p.returncode in (borg.OK, borg.WARNING):
            try:
                made = borg.parse_create(p.stdout)
            except Exception as exc:  # noqa: BLE001 - reported, retried
                return self._failed(due, now, str(exc))
            self.catalogue.record(Point(made.name, now, tuple(due), made.files, made.original, made.deduplicated,
                                       made.repository))
            if self.error:
                self.log(f"repository back: {self.cfg.repo.location}")
                self.failures, self.error, self.error_since = 0, "", 0.0
                self.note(now)
            self.failures = 0
            # borg's warnings (e.g. a file that vanished while read) are changes: the CT is dirty again
            # through inotify, so the next cycle takes it
            return Outcome("done", tuple(due), f"{made.files} files, {made.deduplicated} bytes new")
        return self._failed(due, now, _last_line(p.stderr) or f"borg exited {p.returncode}")

    def _failed(self, due: list[int], now: float, why: str) -> Outcome:
        self.dirty.put_back(due, now)
        self.failures += 1
        pause = min(RETRY_MAX, 2.0 ** min(self.failures, 6))
        self.retry_at = now + pause
        if why != self.error:
            self.log(f"ALARM backup failed: {why} (CTs {' '.join(map(str, due))} stay due; retrying every "
                     f"{pause:.0f} s at most {RETRY_MAX:.0f})")
            self.error, self.error_since = why, self.error_since or now
            self.note(now)
        return Outcome("failed", tuple(due), why)

    def _sleep(self, seconds: float) -> None:
        self.alive()
        time.sleep(seconds)

    def rescan(self, now: float) -> list[int]:
        """The inventory scan: CTs changed since their newest restore point (or with none)."""
        started = {c: int(p.at * 1e9) for c, p in self.catalogue.newest.items()}
        due = scan.due(Path(self.cfg.data), started, self.alive)
        self.dirty.ready(due, now)
        return due


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def serve(cycle: Cycle, stop: threading.Event, clock: Callable[[], float] = time.time, tick: float = 0.25) -> None:
    """The daemon's loop: a scan at start and every scan_every, a step every tick."""
    next_scan = 0.0
    cycle.started = clock()
    cycle.note(cycle.started)
    while not stop.is_set():
        cycle.alive()
        now = clock()
        if now >= next_scan:
            due = cycle.rescan(now)
            cycle.log(f"inventory scan: {len(due)} CT(s) changed since their newest restore point")
            next_scan = now + cycle.cfg.scan_every
        out = cycle.step(now)
        if out is not None and out.kind == "done":
            cycle.log(f"restore point of CT {' '.join(map(str, out.ctids))}: {out.detail}")
        stop.wait(tick if out is None or out.kind != "done" else 0)
