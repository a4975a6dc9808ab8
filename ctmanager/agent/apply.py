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
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dc import resources as res
from ..errors import InputError
from ..files import same_content, write_atomic
from ..render import ctfiles
from ..wire import spec as specs
from ..wire.validate import format_size
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
    """The specs of the CTs this HN has a config for (state_dir/specs/CTID.json),
    as the manager sent them."""

    def __init__(self, state_dir: str) -> None:
        self.dir = Path(state_dir) / "specs"
        self._hashes: dict[int, tuple[tuple[int, int, int], str]] = {}  # CTID -> ((ino, mtime, size), hash)

    def get(self, ctid: int) -> specs.Spec | None:
        try:
            return specs.parse((self.dir / f"{ctid}.json").read_bytes(), ctid)
        except FileNotFoundError:
            return None
        except InputError:
            return None  # unreadable: treated as absent, rewritten by the next create

    def put(self, ctid: int, raw: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if same_content(self.dir / f"{ctid}.json", raw, 0o600) is None:
            write_atomic(self.dir / f"{ctid}.json", raw, 0o600)

    def hashes(self) -> dict[int, str]:
        """CTID -> wire.spec.spec_hash of each stored spec, for the reports (the
        manager compares it with the configured spec: drift). Called every report
        (each second): a file is read and hashed again only when its inode, mtime
        or size changed (specs are replaced by rename: a new inode); an unreadable
        spec is left out, i.e. unknown."""
        out: dict[int, str] = {}
        seen: dict[int, tuple[tuple[int, int, int], str]] = {}
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            entries = []
        for e in entries:
            stem = e.name[:-5]
            if not e.name.endswith(".json") or not stem.isdigit():
                continue
            ctid = int(stem)
            try:
                st = e.stat()
            except FileNotFoundError:
                continue  # destroyed meanwhile
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            cached = self._hashes.get(ctid)
            if cached is not None and cached[0] == key:
                digest = cached[1]
            else:
                digest = self._hash_file(Path(e.path), ctid)
            if digest:
                out[ctid] = digest
                seen[ctid] = (key, digest)
        self._hashes = seen
        return out

    @staticmethod
    def _hash_file(path: Path, ctid: int) -> str:
        try:
            raw = path.read_bytes()
            specs.parse(raw, ctid)  # only a spec that `get` would return counts
            return specs.spec_hash(json.loads(raw))
        except (OSError, InputError):
            return ""

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
        admit(config, store, states, spec, changing=action == "set")
        old = store.get(ctid)
        live: tuple[str, ...] = ()
        if action == "set" and before == OPST_UP and (old is None or old.ct.resources != spec.ct.resources):
            # Before `create`: vzctl set --save rewrites the limits in the CT's config,
            # and `create` then puts back the file the template renders.
            live = driver.set_limits(spec)
        out.changed = driver.create(spec) or bool(live)
        store.put(ctid, raw)  # last: a set that failed half-way is still drift, and retried
        if action == "start":
            driver.start(ctid)
            out.changed = True
            out.message = f"started CT {ctid}"
        elif action == "set" and out.changed:
            out.message = set_message(ctid, old, spec, live, before == OPST_UP)
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


def set_message(ctid: int, old: specs.Spec | None, new: specs.Spec, live: tuple[str, ...], running: bool) -> str:
    """What a `set` did: the resources applied live, and what waits for the next start."""
    if not running:
        return f"config of CT {ctid} written; it applies at the next start"
    changed = [k for k in res.KEYS if old is None or getattr(old.ct.resources, k) != getattr(new.ct.resources, k)]
    shown = [f"{k} {_value(k, old)} -> {_value(k, new)}" for k in changed if k in live]
    later = [k for k in changed if k not in live]
    if old is not None:
        later += [f for f in ("hostname", "tenant", "service", "env", "ip", "storage", "apps")
                  if getattr(old.ct, f) != getattr(new.ct, f)]
        later += [f for f in ("dc", "bridge", "prefixlen", "gateway", "nameservers", "search")
                  if getattr(old, f) != getattr(new, f)]
    parts = [f"{', '.join(shown)} applied live"] if shown else []
    parts += [f"{', '.join(later)} from the next start"] if later else []
    return f"CT {ctid}: {'; '.join(parts) or 'config written'}"


def _value(key: str, spec: specs.Spec | None) -> str:
    if spec is None:
        return "?"
    value: int = getattr(spec.ct.resources, key)
    return format_size(value) if key in ("memory", "swap", "disk") else str(value)


def admit(config: AgentConfig, store: SpecStore, states: dict[int, str], spec: specs.Spec, *,
          changing: bool = False) -> None:
    """`changing`: a `set` of a CT's spec. A drained HN still takes new limits for
    the CTs it runs (they are leaving anyway); the capacity check holds as ever."""
    ctid = spec.ct.ctid
    if config.drain_flag.exists() and not changing:
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
