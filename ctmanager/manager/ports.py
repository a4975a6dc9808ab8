"""The manager daemon's surroundings, as ports (Proxmox's pve-ha-manager keeps
its CRM behind one environment interface the same way): the daemon (daemon.py)
and the fault simulator (ctmanager/sim) run the same `Manager` with different
ports. Here: the port interfaces and the real decision log and fencer; the real
transport is wire/udp.py, the store and the SSH executor are ports too (store/,
executor/), and the clock is a plain callable.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
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


class Worker(Protocol):
    """Something that works while this manager leads (the DNS worker, the backup
    watch: threads of their own, fenced by the lease the manager hands them)."""

    lease_of: Callable[[], Any]
    stopping: threading.Event
    wake: threading.Event

    def start(self) -> None: ...


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
    tenant's names are not published yet; `dns`: the DNS worker; `watch`: the
    store's change signal (a configuration edit is taken in at once);
    `workers`: other threads that work while it leads (the backup watch)."""

    store: Any  # store.db.Store (Any: the simulator's StoreLink stands in for one)
    executor: Executor
    transport: Transport
    clock: Callable[[], float] = time.time
    mono: Callable[[], float] = time.monotonic
    events: Events = field(default_factory=lambda: LogEvents())
    fencer: Fencer | None = None
    storage: Any = None  # manager.effects.Storage
    dns_pending: Pending | None = None
    dns: Any = None  # dnsroutes.worker.DnsWorker: lease_of, start(), poke(), stopping
    metrics: Any = None  # monitoring.metrics.MetricsSender (None: the config's)
    receiver: Receiver | None = None  # (None: one for the config's key and rack)
    watch: Any = None  # store.watch.Watch
    workers: Sequence[Worker] = ()


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
