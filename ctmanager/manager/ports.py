"""The manager daemon's surroundings, as ports (Proxmox's pve-ha-manager keeps
its CRM behind one environment interface the same way): the daemon (daemon.py)
and the fault simulator (ctmanager/sim) run the same `Manager` with different
ports. Here: the port interfaces, the real decision log and fencer, and the
background runner the leader-only workers hand their I/O to; the real
transport is wire/udp.py, the store and the SSH executor are ports too (store/,
executor/), and the clock is a plain callable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..reconcile.state import Action
from ..wire.reports import Receiver, Report

log = logging.getLogger("ctmanager.manager")
FENCE_TIMEOUT = 60.0  # s a fence command may take

FenceDone = Callable[[str, int, str], None]  # (HN, exit code, detail)
SpecOf = Callable[[int], Mapping[str, Any] | None]
Pending = Callable[[Any, set[str]], list[str]]  # (store, names) -> those whose DNS records are not published yet


class Transport(Protocol):
    def receive(self, receiver: Receiver, now: float) -> list[Report]:
        """Reports that arrived since the last call, verified and fresh (through `receiver`)."""

    def send(self, report: Report, to: Sequence[tuple[str, int]]) -> None:
        """The manager's signed heartbeat to every agent."""

    def wait(self, timeout: float, also: Sequence[int] = ()) -> None:
        """Block until a report may have arrived, one of the descriptors `also`
        is readable (the store's change signal), or `timeout` s passed."""


class Executor(Protocol):
    def submit(self, actions: Iterable[Action], spec_of: SpecOf, done: Callable[[Any], None], epoch: int = 0) -> Any:
        """Run actions in the background; `done(result)` with each result
        (executor.runner.Result). `epoch`: the leader's, carried to the agent."""

    def close(self) -> None: ...


class Fencer(Protocol):
    def fence(self, hn: str, ip: str, done: FenceDone) -> None:
        """Power a silent HN off (in the background); `done` when the command ended."""


class Events(Protocol):
    """The daemon's decision log: one line per decision (what, why)."""

    def news(self, line: str) -> None: ...
    def alarm(self, text: str) -> None: ...
    def action(self, a: Action) -> None: ...
    def result(self, a: Action, result: str, message: str, seconds: float) -> None: ...
    def fencing(self, hn: str, silent_for: float, argv0: str) -> None: ...
    def fenced(self, hn: str, ok: bool, detail: str) -> None: ...
    def note(self, line: str) -> None: ...
    def trouble(self, line: str) -> None: ...
    def crash_loop(self, ctid: int, crashes: int, window: float) -> None: ...
    def leadership(self, line: str) -> None:
        """Took the lease, resumed the journal, or stopped leading."""


class Doorbell:
    """Wakes the real loop's wait when a background thread leaves something for it
    (an action's result, a storage batch's outcome): it is taken in at once, not at
    the next poll. A self-pipe, opened by the real loop only (the simulator steps
    the loop itself and never opens one: ringing is then nothing)."""

    def __init__(self) -> None:
        self._r: int | None = None
        self._w: int | None = None

    def open(self) -> int:
        if self._r is None:
            self._r, self._w = os.pipe()
            os.set_blocking(self._r, False)
            os.set_blocking(self._w, False)
        return self._r

    def ring(self) -> None:
        if self._w is not None:
            with contextlib.suppress(OSError):  # a full pipe rings already; a closed one has nobody to wake
                os.write(self._w, b"\0")

    def clear(self) -> None:
        """Before the step that looks (a ring after this wakes the next wait)."""
        if self._r is not None:
            with contextlib.suppress(OSError):
                while os.read(self._r, 4096):
                    pass

    def close(self) -> None:
        for fd in (self._r, self._w):
            if fd is not None:
                os.close(fd)
        self._r = self._w = None


class Mailbox(deque):  # type: ignore[type-arg]
    """A deque background threads append to (appends and pops are atomic) that
    rings the loop's doorbell on every append."""

    def __init__(self, bell: Doorbell) -> None:
        super().__init__()
        self.bell = bell

    def append(self, item: Any) -> None:
        super().append(item)
        self.bell.ring()


class Worker(Protocol):
    """Leader-only work in one steppable shape (the DNS publisher, the backup
    watch), as tenant moves are: the leader's loop steps it every round and wakes
    by `due`; the worker decides when to work from `now` alone and hands its I/O
    to a `Runner`, whose outcome it takes in at a later step. A standby's step
    starts nothing."""

    # What a job's store writes are fenced by, asked at submit time (set by the
    # daemon: Manager.lease; None: unfenced, a worker run outside a daemon).
    lease_of: Callable[[], Any] | None

    def step(self, now: float, leading: bool) -> None:
        """Take in finished jobs; then, leading, submit what is due (cheap when nothing is)."""

    def due(self, now: float) -> float:
        """When it wants its next step at the latest (inf: not before something changes)."""

    def close(self) -> None:
        """The daemon stops: let go of what its jobs hold."""


class Runner(Protocol):
    def submit(self, job: Callable[[], Any], done: Callable[[Any], None], name: str = "job") -> None:
        """Run `job` in the background; `done` with what it returned, or with the
        exception it raised. `done` runs on the job's thread: it only queues."""


class ThreadRunner:
    """The real runner: each job on a thread of its own, so a slow DNS server or
    storage node never stalls the loop (a worker has one job at a time). `bell`:
    the loop's (ManagerEnv.bell), rung once a job's outcome is queued."""

    def __init__(self, bell: Doorbell | None = None) -> None:
        self.bell = bell

    def submit(self, job: Callable[[], Any], done: Callable[[Any], None], name: str = "job") -> None:
        def run() -> None:
            try:
                out = job()
            except Exception as exc:  # noqa: BLE001 - handed to the worker's next step, which says it
                out = exc
            done(out)
            if self.bell is not None:
                self.bell.ring()

        threading.Thread(target=run, name=name, daemon=True).start()


@dataclass
class ManagerEnv:
    """Everything a `Manager` takes from its surroundings, in one place:
    `ctmanager run` builds it from the real things (cli/loop.py), the simulator
    from simulated ones (sim/manager.py), and the daemon's code is the same.

    `store`: the store (a link to it in the simulator); `executor`: actions over
    SSH; `transport`: signed UDP reports in, heartbeats out; `clock`: wall time
    (what reports and the journal say); `mono`: the monotonic clock the lease is
    believed by; `events`: the decision log; `fencer`: powers a silent HN off
    (None: wait dead_after); `storage`: the storage nodes, for tenant moves
    (manager/effects.py; None: moves wait); `dns_pending`: which of a moved
    tenant's names are not published yet; `dns`: the DNS worker (a Worker the
    daemon also pokes after a reload); `watch`: the store's change signal (a
    configuration edit is taken in at once); `workers`: other work while it
    leads (the backup watch), stepped by the loop as `dns` is; `bell`: wakes the
    real loop when a background thread leaves it something (the workers' runner
    rings it too)."""

    store: Any  # store.db.Store (Any: the simulator's StoreLink stands in for one)
    executor: Executor
    transport: Transport
    clock: Callable[[], float] = time.time
    mono: Callable[[], float] = time.monotonic
    events: Events = field(default_factory=lambda: LogEvents())
    fencer: Fencer | None = None
    storage: Any = None  # manager.effects.Storage
    dns_pending: Pending | None = None
    dns: Any = None  # dnsroutes.worker.DnsWorker: a Worker with poke()
    metrics: Any = None  # monitoring.metrics.MetricsSender (None: the config's)
    receiver: Receiver | None = None  # (None: one for the config's key and rack)
    watch: Any = None  # store.watch.Watch
    workers: Sequence[Worker] = ()
    bell: Doorbell = field(default_factory=Doorbell)  # background threads ring it when they leave a result


class CommandFencer:
    """Runs the configured fence command (e.g. an IPMI fence agent) with {hn} and
    {ip} filled in. Its arguments may hold a BMC password: they are never logged."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = tuple(argv)

    def fence(self, hn: str, ip: str, done: FenceDone) -> None:
        argv = [a.replace("{hn}", hn).replace("{ip}", ip) for a in self.argv]

        def run() -> None:
            try:
                p = subprocess.run(argv, capture_output=True, text=True, timeout=FENCE_TIMEOUT,
                                   stdin=subprocess.DEVNULL)
                tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or [""]
                done(hn, p.returncode, f"exit {p.returncode}: {redact(tail[0][:200], argv, hn, ip)}")
            except (OSError, subprocess.TimeoutExpired) as exc:
                done(hn, -1, type(exc).__name__)

        threading.Thread(target=run, name=f"fence-{hn}", daemon=True).start()


def redact(text: str, argv: Sequence[str], hn: str, ip: str) -> str:
    """`text` (a fence command's last output line) without any of its arguments
    that could be a password: a tool may echo its command line when it fails."""
    for arg in sorted(set(argv[1:]) - {hn, ip}, key=len, reverse=True):
        if len(arg) >= 3 and not arg.startswith("-"):
            text = text.replace(arg, "***")
    return text


class LogEvents:
    """The decision log through `logging` (what `ctmanager run` prints)."""

    def news(self, line: str) -> None:
        (log.warning if "DEAD" in line or "NO QUORUM" in line else log.info)("%s", line)

    def alarm(self, text: str) -> None:
        log.error("%s", text)

    def action(self, a: Action) -> None:
        log.info("%s", a)

    def result(self, a: Action, result: str, message: str, seconds: float) -> None:
        log.info("%s %s on %s: %s%s (%.2fs)", a.kind, a.ctid, a.hn, result,
                 "" if result == "done" else f": {message}", seconds)

    def fencing(self, hn: str, silent_for: float, argv0: str) -> None:
        log.warning("%s silent for %gs: running the fence command (%s)", hn, silent_for, argv0)

    def fenced(self, hn: str, ok: bool, detail: str) -> None:
        if ok:
            log.warning("fence command: %s is off; it is dead now", hn)
        else:
            log.error("fence command for %s failed (%s); waiting dead_after instead", hn, detail)

    def note(self, line: str) -> None:
        log.debug("%s", line)

    def trouble(self, line: str) -> None:
        log.error("%s", line)

    def leadership(self, line: str) -> None:
        log.warning("%s", line)

    def crash_loop(self, ctid: int, crashes: int, window: float) -> None:
        log.error("CT %d is in a crash loop (%d crashes in %g min): left down; clear with: ctmanager ct reset %d",
                  ctid, crashes, window / 60, ctid)
