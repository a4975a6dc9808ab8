"""`ctagent apply ACTION CTID`: the HN-side executor the manager runs over SSH.

The CT spec comes as JSON on stdin; one JSON result goes to stdout. Idempotent:
starting a running CT, stopping a stopped one or destroying a missing one is
success with `changed: false`.

Admission (before a CT may start here): the node is not drained, the CTID is not
already used here by another CT, and the memory and disk of the CTs running
here plus this one fit the HN's capacity (minus the memory reserve). A refusal
is a *rejection* with its own exit code, so the scheduler tries another HN.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError
from ..render import ctfiles
from ..files import write_atomic
from ..wire.validate import format_size
from ..wire import spec as specs
from .config import AgentConfig
from .drivers import Driver, DriverError
from .drivers.base import OPST_UP

ACTIONS = ("start", "stop", "create", "destroy", "set")
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_REJECTED, EXIT_TEMPORARY = 0, 1, 2, 3, 4
NEEDS_SPEC = ("start", "create", "set")


@dataclass
class Outcome:
    action: str
    ctid: int
    hn: str
    result: str = "done"  # done | rejected | failed | temporary
    changed: bool = False
    message: str = ""
    opst: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return {"done": EXIT_OK, "rejected": EXIT_REJECTED, "temporary": EXIT_TEMPORARY,
                "bad_input": EXIT_BAD_INPUT}.get(self.result, EXIT_FAILED)

    def as_json(self) -> dict[str, Any]:
        return {"action": self.action, "ctid": self.ctid, "hn": self.hn, "result": self.result,
                "changed": self.changed, "message": self.message, "opst": self.opst, **self.extra}


class Rejected(Exception):
    pass


class SpecStore:
    """The specs of the CTs this HN has a config for (state_dir/specs/CTID.json)."""

    def __init__(self, state_dir: str) -> None:
        self.dir = Path(state_dir) / "specs"

    def get(self, ctid: int) -> specs.Spec | None:
        try:
            return specs.parse((self.dir / f"{ctid}.json").read_bytes(), ctid)
        except FileNotFoundError:
            return None
        except InputError:
            return None  # unreadable: treated as absent, rewritten by the next create

    def put(self, ctid: int, raw: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.dir / f"{ctid}.json", raw, 0o600)

    def drop(self, ctid: int) -> None:
        (self.dir / f"{ctid}.json").unlink(missing_ok=True)

    def all(self) -> dict[int, specs.Spec]:
        out = {}
        for f in self.dir.glob("*.json") if self.dir.is_dir() else ():
            if f.stem.isdigit() and (s := self.get(int(f.stem))) is not None:
                out[s.ct.ctid] = s
        return out


def apply(config: AgentConfig, driver: Driver, action: str, ctid: int, stdin: bytes, *, purge: bool = False) -> Outcome:
    """Run one action; every failure becomes an Outcome, never an exception."""
    out = Outcome(action, ctid, config.hn)
    try:
        if action not in ACTIONS:
            raise InputError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
        raw = stdin.strip()
        spec = specs.parse(raw, ctid) if raw or action in NEEDS_SPEC else None
        with ct_lock(config, ctid):
            _run(config, driver, action, ctid, spec, raw, purge, out)
    except InputError as exc:
        out.result, out.message = "bad_input", str(exc)
    except Rejected as exc:
        out.result, out.message = "rejected", str(exc)
    except DriverError as exc:
        out.result = "rejected" if exc.refused else ("temporary" if exc.temporary else "failed")
        out.message = str(exc)
    except OSError as exc:
        out.result, out.message = "failed", f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
    return out


def _run(config: AgentConfig, driver: Driver, action: str, ctid: int, spec: specs.Spec | None, raw: bytes,
         purge: bool, out: Outcome) -> None:
    store = SpecStore(config.state_dir)
    states = driver.observe()
    before = states.get(ctid)
    if action in ("create", "set", "start"):
        assert spec is not None
        if action == "start" and before == OPST_UP:
            out.opst = before
            return  # already running: nothing to admit, nothing to do
        if action == "start":
            check_fence(config, time.time())
        admit(config, store, states, spec)
        out.changed = driver.create(spec)
        store.put(ctid, raw)
        if action == "start":
            driver.start(ctid)
            out.changed = True
            out.message = f"started CT {ctid}"
        else:
            out.message = f"config of CT {ctid} {'written' if out.changed else 'unchanged'}"
    elif action == "stop":
        driver.stop(ctid)
        out.changed = before == OPST_UP
        out.message = f"stopped CT {ctid}" if out.changed else f"CT {ctid} was not running"
    elif action == "destroy":
        known = spec or store.get(ctid)
        driver.destroy(ctid)
        store.drop(ctid)
        out.changed = before is not None
        out.message = f"destroyed CT {ctid}" if out.changed else f"CT {ctid} was not here"
        if purge:
            if known is None:
                raise InputError("--purge-data needs the CT's spec (on stdin) to find its /data")
            data = Path(ctfiles.data_dir(config.paths, known.ct))
            if data.is_dir():
                shutil.rmtree(data)
                out.message += f"; deleted {data}"
            out.extra["purged"] = str(data)
    out.opst = driver.observe().get(ctid)


def check_fence(config: AgentConfig, now: float) -> None:
    """No CT starts on an HN that is fenced, or whose daemon is not running: nothing
    there would stop the CT when the HN loses quorum."""
    try:
        state = json.loads(config.fence_file.read_text())
        fenced, at = bool(state["fenced"]), float(state["at"])
    except (OSError, ValueError, KeyError, TypeError):
        fenced, at = None, None
    why = fence_verdict(config.hn, fenced, at, now, config.timers.fence_after)
    if why:
        raise Rejected(why)


def fence_verdict(hn: str, fenced: bool | None, at: float | None, now: float, fence_after: float) -> str:
    """Why a CT may not start here ('' if it may): `fenced` and `at` are what the
    daemon last wrote (None: it never ran). Shared with the simulator."""
    if fenced is None or at is None:
        return f"{hn}: the agent daemon has not run here (no fence.json); it must run to fence CTs"
    if now - at > fence_after:
        return f"{hn}: the agent daemon stopped {now - at:.0f}s ago; it must run to fence CTs"
    if fenced:
        return f"{hn} is fenced: it hears fewer than a majority of the rack's voters"
    return ""


def admit(config: AgentConfig, store: SpecStore, states: dict[int, str], spec: specs.Spec) -> None:
    ctid = spec.ct.ctid
    if config.drain_flag.exists():
        raise Rejected(f"{config.hn} is drained")
    mine = store.get(ctid)
    if mine is not None and mine.ct.hostname != spec.ct.hostname:
        raise Rejected(f"CTID conflict: CT {ctid} on {config.hn} is {mine.ct.hostname}, not {spec.ct.hostname}")
    if mine is None and ctid in states:
        raise Rejected(f"CTID conflict: a CT {ctid} that ctagent did not create exists on {config.hn}")
    used_mem, used_disk = committed(store, states, besides=ctid)
    mem, disk = used_mem + spec.ct.resources.memory, used_disk + spec.ct.resources.disk
    limit = config.memory - config.reserve_memory
    if mem > limit:
        raise Rejected(f"not enough memory on {config.hn}: {format_size(mem)} needed with the running CTs, "
                       f"{format_size(max(limit, 0))} available")
    if disk > config.disk:
        raise Rejected(f"not enough disk on {config.hn}: {format_size(disk)} needed, {format_size(config.disk)} available")


def committed(store: SpecStore, states: dict[int, str], besides: int | None = None) -> tuple[int, int]:
    """Memory and disk promised to the CTs running here (what the reports subtract)."""
    specs_here = store.all()
    running = [specs_here[c] for c, s in states.items() if s == OPST_UP and c in specs_here and c != besides]
    return sum(s.ct.resources.memory for s in running), sum(s.ct.resources.disk for s in running)


@contextmanager
def ct_lock(config: AgentConfig, ctid: int) -> Iterator[None]:
    """One action per CT at a time on this HN (the daemon and a CLI may both act)."""
    locks = Path(config.state_dir) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{ctid}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def emit(outcome: Outcome) -> str:
    return json.dumps(outcome.as_json(), sort_keys=True)
