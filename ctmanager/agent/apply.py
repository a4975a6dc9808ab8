"""`ctagent apply ACTION CTID`: the HN-side executor the manager runs over SSH.

The CT spec comes as JSON on stdin; one JSON result goes to stdout. Idempotent:
starting a running CT, stopping a stopped one or destroying a missing one is
success with `changed: false`.

Admission (before a CT may start here): the node is not drained, the CTID is not
already used here by another CT, and the memory and disk of the CTs running
here plus this one fit the HN's capacity (minus the memory reserve). A refusal
is a *rejection* with its own exit code, so the scheduler tries another HN.

A CT whose /data is sealed on its storage node (`ctstorage seal`, before the
final copy of a tenant move: the marker `<data>/<CTID>.sealed` beside its
folder, seen here at ctfiles.data_dir(paths, ct) + ".sealed") is not started:
result "sealed", exit 6, checked after the fence. No other HN would do better,
so it is not a rejection. Stopping, creating and destroying still work. The HNs
must see a new marker at once: mount the storage with `lookupcache=positive`
(or `none`), so NFS never answers from a cached "no such file".
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..dc import resources as res
from ..errors import InputError
from ..render import ctfiles
from ..validate import format_size
from ..wire import spec as specs
from ..wire.results import ACTIONS, NEEDS_SPEC, ActionResult, ApplyOutcome
from .config import AgentConfig
from .drivers import Driver, DriverError
from .drivers.base import OPST_UP
from .node import DiskNode, Node, SpecBook


class Rejected(Exception):
    pass


class Sealed(Exception):
    pass


def apply(config: AgentConfig, driver: Driver, action: str, ctid: int, stdin: bytes, *, purge: bool = False,
          node: Node | None = None, now: float | None = None, epoch: int | None = None) -> ApplyOutcome:
    """Run one action; every failure becomes an ApplyOutcome, never an exception.
    `node`: this HN's shared state (default: the files under state_dir).
    `epoch`: the sending manager's lease epoch; refused (stale) if this HN has
    seen a newer one. None: a hand-run action, not fenced."""
    out = ApplyOutcome(action, ctid, config.hn)
    node = DiskNode(config) if node is None else node
    try:
        if action not in ACTIONS:
            raise InputError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
        raw = stdin.strip()
        spec = specs.parse(raw, ctid) if raw or action in NEEDS_SPEC else None
        with node.lock(ctid):
            # Under the CT's lock: a stale action queued behind the new leader's must
            # not run after it (a start undoing its stop).
            if epoch is not None and epoch < (newest := node.see_epoch(epoch)):
                out.result = ActionResult.STALE
                out.message = (f"{config.hn} has seen manager epoch {newest}; this action of epoch {epoch} "
                               "comes from a manager that no longer leads: not done")
                return out
            if epoch is None:  # a hand-run action: no manager waits for it
                _run(config, driver, node, action, ctid, spec, raw, purge, out, time.time() if now is None else now)
            else:
                with node.applying(ctid, epoch):  # the daemon's reports wait for it to settle the epoch
                    _run(config, driver, node, action, ctid, spec, raw, purge, out,
                         time.time() if now is None else now)
    except InputError as exc:
        out.result, out.message = ActionResult.BAD_INPUT, str(exc)
    except Rejected as exc:
        out.result, out.message = ActionResult.REJECTED, str(exc)
    except Sealed as exc:
        out.result, out.message = ActionResult.SEALED, str(exc)
    except DriverError as exc:
        out.result = (ActionResult.REJECTED if exc.refused else ActionResult.TEMPORARY if exc.temporary else
                      ActionResult.FAILED)
        out.message = str(exc)
    except OSError as exc:
        out.result, out.message = ActionResult.FAILED, f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
    return out


def _run(config: AgentConfig, driver: Driver, node: Node, action: str, ctid: int, spec: specs.Spec | None,
         raw: bytes, purge: bool, out: ApplyOutcome, now: float) -> None:
    store = node.specs
    states = driver.observe()
    before = states.get(ctid)
    if action in ("create", "set", "start"):
        assert spec is not None
        if action == "start" and before == OPST_UP:
            out.opst = before
            return  # already running: nothing to admit, nothing to do
        if action == "start":
            check_fence(config, node, now)
            check_seal(config, node, spec)
        admit(config, node, states, spec, changing=action == "set")
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


def check_fence(config: AgentConfig, node: Node, now: float) -> None:
    """No CT starts on an HN that is fenced, or whose daemon is not running: nothing
    there would stop the CT when the HN loses quorum."""
    fenced, at = node.fence_state()
    why = fence_verdict(config.hn, fenced, at, now, config.timers.fence_after)
    if why:
        raise Rejected(why)


def check_seal(config: AgentConfig, node: Node, spec: specs.Spec) -> None:
    """No CT starts on a /data its storage node sealed: a tenant move copied it
    away, and what the CT would write there is lost (or worse, runs twice)."""
    if node.sealed(ctfiles.data_dir(config.paths, spec.ct) + ".sealed"):
        raise Sealed(f"CT {spec.ct.ctid}: its /data on {spec.ct.storage} is sealed (a tenant move copied it "
                     "away): not started")


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


def admit(config: AgentConfig, node: Node, states: dict[int, str], spec: specs.Spec, *,
          changing: bool = False) -> None:
    """`changing`: a `set` of a CT's spec. A drained HN still takes new limits for
    the CTs it runs (they are leaving anyway); the capacity check holds as ever."""
    ctid = spec.ct.ctid
    store = node.specs
    if node.drained() and not changing:
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


def committed(store: SpecBook, states: dict[int, str], besides: int | None = None) -> tuple[int, int]:
    """Memory and disk promised to the CTs running here (what the reports subtract)."""
    specs_here = store.all()
    running = [specs_here[c] for c, s in states.items() if s == OPST_UP and c in specs_here and c != besides]
    return sum(s.ct.resources.memory for s in running), sum(s.ct.resources.disk for s in running)
