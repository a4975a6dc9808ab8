"""The tenant moves into this manager's rack: `MoveRunner` takes each one step on
(store/moves.py holds where it is), `Mover` is the daemon's thread that runs them
while this manager leads (every write fenced by its lease, like the DNS worker).

    copy     pull each CT's /data to the destination's storage node while the
             tenant runs, until a pass moves little (or max_passes)
    cutover  stop: hold the tenant down at the source; wait until no HN of the
                   source runs (or may run) one of its CTs
             final: the last pull, then flip the CT rows to this rack (new
                   addresses, same CTIDs, routes to this rack's services)
             start: wait until every CT is UP here and its names are published
    online   the downtime is recorded; then delete (or rest, with --keep-source)
    delete   remove the source copies (only now; replayable) -> done
    rollback any failure before online: hold it down here and flip back if it
             had flipped, wait until it is UP at the source again, remove the
             partial copies here -> rolled-back

A CT never runs in both racks: a flip happens only while the tenant is held down
and the rack it leaves reports none of its CTs running (fresh reports of every HN
that had one). Each step is idempotent, so a manager that dies anywhere is
replaced by one that takes the same step again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..dc.model import DcTemplate, rack_name
from ..dnsroutes import records
from ..errors import CtmError, InputError
from ..executor.ssh import SshError
from ..executor.storage import DataInfo, Pulled, StorageFailed
from ..reconcile.state import Settings
from ..store import Store, moves, open_store, queries
from ..store import lease as leases
from ..store import loop as persist
from ..store.db import Locator
from .config import MoveSettings

log = logging.getLogger(__name__)
SPACE_MARGIN = 1.05  # the destination must have this much more free space than the tenant's /data
RETRY_EVERY = 5.0  # s between tries of a failed delete or clean-up
CLEANUP_TRIES = 3
WATCH_EVERY = 0.5  # s between looks for an abort while a copy runs
HOLD_SETTLE = 0.75  # s a rack's manager may decide on the old configuration (it reloads at least every 0.5 s)
REPORT_AFTER = 0.5  # s: an HN's report counts only this long after its last action on the CT
ACTION_LOOKBACK = 60.0  # s before the hold whose finished actions still need a later report
STOPPED = ("stop done", "destroy done")  # a finished action that leaves the CT down on its HN


class Storage(Protocol):
    def info(self, node: str, ctid: int) -> DataInfo: ...
    def pull(self, node: str, ctid: int, source: str, path: str, bwlimit: int, timeout: float) -> Pulled: ...
    def remove(self, node: str, ctid: int) -> bool: ...
    def cancel(self, node: str, ctid: int) -> bool: ...


class Interrupted(CtmError):
    """A pull was cancelled: the move's abort was asked, or this manager stopped leading."""


Pending = Callable[[Store, set[str]], list[str]]  # names among these whose DNS records are not published yet


class MoveRunner:
    def __init__(self, store: Store, dc: DcTemplate, slot: int, storage: Storage, settings: MoveSettings,
                 reconcile: Settings, dns_pending: Pending | None = None, dead_after: float = 16.0) -> None:
        self.store, self.dc, self.slot, self.storage, self.dead_after = store, dc, slot, storage, dead_after
        self.settings, self.reconcile, self.dns_pending = settings, reconcile, dns_pending
        self._tries: dict[tuple[int, str], tuple[int, float]] = {}  # (move, what) -> (failures, next try)
        self._paths: dict[tuple[int, int], str] = {}  # (move, CTID) -> its /data on the source (final pass: no look)
        self.leading: Callable[[], bool] = lambda: True  # the Mover's: a pull stops when this manager does not lead

    def step(self, m: moves.Move) -> moves.Move:
        """Take move `m` one step on; returns it as it is now."""
        if m.aborting and m.phase in ("copy", "cutover"):
            return self._rollback(m, "aborted by ops")
        if m.phase == "copy":
            return self._copy(m)
        if m.phase == "cutover":
            return {"stop": self._stop, "final": self._final}.get(m.step, self._start)(m)
        if m.phase == "online":
            return m if m.keep_source else self._write(m, "deleting the source copy", phase="delete", step="")
        if m.phase == "delete":
            return self._delete(m)
        if m.phase == "rollback":
            return {"stop": self._back_stop, "start": self._back_start}.get(m.step, self._cleanup)(m)
        return m

    # ---- store -------------------------------------------------------------------
    def _write(self, m: moves.Move, say: str, *, config: bool = False, **changes: Any) -> moves.Move:
        if say:
            log.info("move %d (%s): %s", m.id, m.tenant, say)
        with self.store.transaction(config=config):
            return moves.update(self.store, m, self.store.now(), say, **changes)

    # ---- copy ----------------------------------------------------------------------
    def _copy(self, m: moves.Move) -> moves.Move:
        if not m.precopy:
            return self._begin_cutover(m, "no pre-copy asked: stopping the tenant for one whole copy")
        try:
            if m.passes == 0:
                self._check_space(m)
            delta, took = self._pass(m)
        except Interrupted as exc:
            return self._rollback(m, str(exc)) if m.aborting or "abort" in str(exc) else m
        except (StorageFailed, SshError) as exc:
            return self._rollback(m, f"copy pass {m.passes + 1} failed: {exc}")
        m = self._write(m, f"pass {m.passes + 1}: {_mib(delta)} copied in {took:.1f} s", passes=m.passes + 1,
                        bytes=m.bytes + delta, last_delta=delta)
        small = max(self._bwlimit(m), 1 << 20)  # what the last copy moves in about a second
        if delta <= small or m.passes >= self.settings.max_passes:
            return self._begin_cutover(m, f"the last pass moved {_mib(delta)}: stopping the tenant at "
                                          f"{rack_name(m.src)} for the final copy")
        return m

    def _check_space(self, m: moves.Move) -> None:
        need = sum(self.storage.info(c.src_storage, c.ctid).bytes for c in m.cts)
        for node in sorted({c.dst_storage for c in m.cts}):
            free = self.storage.info(node, m.cts[0].ctid).free
            if free < need * SPACE_MARGIN:
                raise StorageFailed(f"target storage full: {node} has {_mib(free)} free, the tenant's /data "
                                    f"needs {_mib(need)}")

    def _pass(self, m: moves.Move) -> tuple[int, float]:
        """One pull of every CT's /data; returns (bytes brought over, seconds)."""
        started, delta, sizes = time.monotonic(), 0, []
        for c in m.cts:
            path, size = self._paths.get((m.id, c.ctid)), c.bytes
            if path is None:  # the first pass of this process: where is it, is it there
                src = self.storage.info(c.src_storage, c.ctid)
                if not src.exists:
                    raise StorageFailed(f"{c.src_storage} has no /data of CT {c.ctid} ({src.path})")
                path, size = src.path, src.bytes
                self._paths[m.id, c.ctid] = path
            got = self._pull(m, c, path, max(600.0, size / max(self._bwlimit(m), 1 << 20) * 3))
            delta += got.bytes
            sizes.append((c.ctid, got.total_bytes, got.files))
        with self.store.transaction(config=False):
            moves.record_sizes(self.store, m, sizes)
        return delta, time.monotonic() - started

    def _pull(self, m: moves.Move, c: moves.MoveCt, path: str, timeout: float) -> Pulled:
        """One CT's pull, cancelled on the storage node when the move's abort is
        asked or this manager stops leading (looked at every WATCH_EVERY s)."""
        got: dict[str, Any] = {}

        def run() -> None:
            try:
                got["pulled"] = self.storage.pull(c.dst_storage, c.ctid, c.src_storage, path, self._bwlimit(m), timeout)
            except Exception as exc:  # handed to the caller's thread below
                got["error"] = exc

        t = threading.Thread(target=run, name=f"pull-{c.ctid}", daemon=True)
        t.start()
        why = ""
        while t.is_alive():
            t.join(WATCH_EVERY)
            if t.is_alive() and not why:
                why = ("aborted by ops" if moves.get(self.store, m.id).aborting else
                       "" if self.leading() else "this manager no longer leads")
                if why:
                    log.info("move %d (%s): %s: cancelling the copy of CT %d", m.id, m.tenant, why, c.ctid)
                    try:
                        self.storage.cancel(c.dst_storage, c.ctid)
                    except (StorageFailed, SshError) as exc:
                        log.warning("move %d: cancel on %s: %s", m.id, c.dst_storage, exc)
        if why:
            raise Interrupted(why)
        if "error" in got:
            raise got["error"]
        return got["pulled"]  # type: ignore[no-any-return]

    def _bwlimit(self, m: moves.Move) -> int:
        return m.bwlimit or self.settings.bwlimit

    # ---- cutover -------------------------------------------------------------------
    def _begin_cutover(self, m: moves.Move, say: str) -> moves.Move:
        now = self.store.now()
        return self._write(m, say, config=True, phase="cutover", step="stop", hold=True, held_at=now, stopped_at=now,
                           deadline=now + self.settings.stop_timeout)

    def _stop(self, m: moves.Move) -> moves.Move:
        down, why = self._down_in(m, m.src)
        if down:
            return self._write(m, f"stopped at {rack_name(m.src)}", step="final")
        if self.store.now() > (m.deadline or 0):
            return self._rollback(m, f"{rack_name(m.src)} did not stop the tenant within "
                                     f"{self.settings.stop_timeout:g} s: {why}")
        return m

    def _final(self, m: moves.Move) -> moves.Move:
        try:
            delta, took = self._pass(m)
        except Interrupted as exc:
            return self._rollback(m, str(exc)) if "abort" in str(exc) else m
        except (StorageFailed, SshError) as exc:
            return self._rollback(m, f"the final copy failed: {exc}")
        now = self.store.now()
        try:
            with self.store.transaction():
                down, why = self._down_in(m, m.src)
                if not down:  # the hold keeps it down, but this is where the flip is decided: wait again
                    return moves.update(self.store, m, now, f"not flipped: {why}", step="stop")
                moves.update(self.store, m, now, f"final pass: {_mib(delta)} in {took:.1f} s", passes=m.passes + 1,
                             bytes=m.bytes + delta, last_delta=delta)
                m = moves.flip(self.store, self.dc, moves.get(self.store, m.id), now, forward=True)
                m = moves.update(self.store, m, now, "", step="start", deadline=now + self.settings.start_timeout)
        except InputError as exc:  # no free address there, a CT edited meanwhile: nothing of the flip was written
            return self._rollback(moves.get(self.store, m.id), f"cannot configure the CTs in {rack_name(m.dst)}: "
                                  f"{exc}")
        log.info("move %d (%s): flipped to %s; waiting for it to be UP and resolvable", m.id, m.tenant,
                 rack_name(m.dst))
        return m

    def _start(self, m: moves.Move) -> moves.Move:
        up, why = self._online_in(m, m.dst)
        now = self.store.now()
        if up:
            downtime = now - (m.stopped_at or now)
            return self._write(m, f"online in {rack_name(m.dst)}: UP and resolvable; downtime {downtime:.1f} s",
                               phase="online", step="", online_at=now, downtime=downtime, deadline=None)
        refused = self._refused(m, m.dst)
        if refused:
            return self._rollback(m, refused)
        if now > (m.deadline or 0):
            return self._rollback(m, f"not online in {rack_name(m.dst)} within {self.settings.start_timeout:g} s: "
                                     f"{why}")
        return m

    # ---- delete ----------------------------------------------------------------------
    def _delete(self, m: moves.Move) -> moves.Move:
        if not self._due(m, "delete"):
            return m
        try:
            self._remove(m, "src_storage")
        except (StorageFailed, SshError) as exc:
            return self._failed(m, "delete", f"deleting the source copy failed (retried): {exc}")
        return self._write(m, f"source copy deleted from {', '.join(sorted({c.src_storage for c in m.cts}))}",
                           phase="done", step="", finished_at=self.store.now())

    def _remove(self, m: moves.Move, side: str) -> None:
        """Remove the copies on one side, never one a CT is configured to use now."""
        current = {c.ctid: c.storage for c in queries.cts(self.store, tenant=m.tenant)}
        for c in m.cts:
            node = getattr(c, side)
            if current.get(c.ctid) == node:
                raise StorageFailed(f"CT {c.ctid} is configured on {node}: its /data there is not removed")
            self.storage.remove(node, c.ctid)

    # ---- rollback --------------------------------------------------------------------
    def _rollback(self, m: moves.Move, error: str) -> moves.Move:
        now = self.store.now()
        log.warning("move %d (%s): rolling back: %s", m.id, m.tenant, error)
        if m.flipped:
            return self._write(m, f"rolling back: {error}", config=True, phase="rollback", step="stop", hold=True,
                               held_at=now, error=error, aborting=False, deadline=now + self.settings.stop_timeout)
        return self._write(m, f"rolling back: {error}", config=True, phase="rollback", step="start", hold=False,
                           error=error, aborting=False, deadline=now + self.settings.start_timeout)

    def _back_stop(self, m: moves.Move) -> moves.Move:
        down, why = self._down_in(m, m.dst)
        if not down:  # it must stop here before it may start there: wait, however long
            if self.store.now() > (m.deadline or 0) and self._due(m, "back-stop"):
                self._failed(m, "back-stop", f"still waiting for {rack_name(m.dst)} to stop it: {why}")
            return m
        now = self.store.now()
        with self.store.transaction():
            m = moves.flip(self.store, self.dc, moves.get(self.store, m.id), now, forward=False)
            return moves.update(self.store, m, now, "", step="start", deadline=now + self.settings.start_timeout)

    def _back_start(self, m: moves.Move) -> moves.Move:
        up, why = self._online_in(m, m.src)
        if up:
            return self._write(m, f"online again in {rack_name(m.src)}", step="cleanup")
        if self.store.now() > (m.deadline or 0):
            return self._write(m, f"not UP in {rack_name(m.src)} yet ({why}); its manager goes on trying",
                               step="cleanup")
        return m

    def _cleanup(self, m: moves.Move) -> moves.Move:
        if not self._due(m, "cleanup"):
            return m
        _, done = moves.actions(self.store, [c.ctid for c in m.cts], m.dst, m.created_at)
        ran = sorted({ctid for ctid, _, what, _ in done if what == "start done"})
        if ran:  # it ran there: what it wrote is only in that copy; keep it for ops to look at
            return self._write(m, f"copies on {m.cts[0].dst_storage} KEPT: CT(s) {', '.join(map(str, ran))} ran in "
                               f"{rack_name(m.dst)} before the rollback, and what they wrote there is only in them",
                               phase="rolled-back", step="", finished_at=self.store.now())
        try:
            self._remove(m, "dst_storage")
        except (StorageFailed, SshError) as exc:
            failures = self._tries.get((m.id, "cleanup"), (0, 0.0))[0] + 1
            if failures < CLEANUP_TRIES:
                return self._failed(m, "cleanup", f"removing the partial copies failed (retried): {exc}")
            return self._write(m, f"partial copies NOT removed: {exc}", phase="rolled-back", step="",
                               finished_at=self.store.now())
        return self._write(m, "partial copies removed", phase="rolled-back", step="", finished_at=self.store.now())

    def _due(self, m: moves.Move, what: str) -> bool:
        return time.monotonic() >= self._tries.get((m.id, what), (0, 0.0))[1]

    def _failed(self, m: moves.Move, what: str, say: str) -> moves.Move:
        failures = self._tries.get((m.id, what), (0, 0.0))[0] + 1
        self._tries[m.id, what] = (failures, time.monotonic() + RETRY_EVERY * min(failures, 12))
        return self._write(m, say)

    # ---- facts -------------------------------------------------------------------------
    def _down_in(self, m: moves.Move, rack: int) -> tuple[bool, str]:
        """Whether no HN of `rack` runs, or may run, one of the tenant's CTs, now
        that the hold (since `m.held_at`) keeps them down there. Its manager may
        start one only on a decision made before it took the hold in (HOLD_SETTLE),
        and writes every decision to the journal before acting: so none of its
        intents for them may be pending, and every HN that lists one, or finished
        an action on one lately, must have reported (fresh) after that action, and
        none may say UP; a done stop (or destroy) as the newest action there says
        so itself. An HN silent for dead_after while its rack has a leader
        counts as dead (it has fenced itself)."""
        now, held = self.store.now(), m.held_at or 0.0
        if now < held + HOLD_SETTLE:
            return False, f"{rack_name(rack)} takes the hold in"
        ids = [c.ctid for c in m.cts]
        pending, done = moves.actions(self.store, ids, rack, held - ACTION_LOOKBACK)
        if pending:
            return False, f"{rack_name(rack)} has an action on CT {pending[0][0]} in flight on {pending[0][1]}"
        obs = persist.observed(self.store, rack, store_clock=True)
        led = rack in leases.leaders(self.store)
        last: dict[tuple[int, str], tuple[float, str]] = {}  # (CTID, HN) -> its newest finished action
        for ctid, hn, what, finished in sorted(done, key=lambda d: d[3]):
            last[ctid, hn] = (finished, what)
        for ctid in ids:
            hns = set(obs.where.get(ctid, {})) | {hn for c, hn in last if c == ctid}
            for hn in sorted(hns):
                at = obs.received_at.get(hn)
                acted, what = last.get((ctid, hn), (-1e18, ""))
                if what in STOPPED and (at is None or at < acted + REPORT_AFTER):
                    continue  # its own stop said so, under the CT's lock, and nothing acted on it since
                if at is not None and led and now - at > self.dead_after:
                    continue  # silent for dead_after while its rack has a leader: fenced, its CTs are gone
                if at is None or not obs.known(hn, now, self.reconcile):
                    return False, f"CT {ctid} may still run on {hn} (no fresh report)"
                # (a report from before the hold will do where nothing acted since: it says how things are)
                if at < acted + REPORT_AFTER:
                    return False, f"waiting for {hn} to report after its action on CT {ctid}"
                if obs.where.get(ctid, {}).get(hn) == "UP":
                    return False, f"CT {ctid} still runs on {hn}"
        return True, ""

    def _online_in(self, m: moves.Move, rack: int) -> tuple[bool, str]:
        """Whether every CT of the tenant (ADMST UP) runs on one HN of `rack`, and
        its DNS names are published."""
        obs = persist.observed(self.store, rack, store_clock=True)
        now = self.store.now()
        cts = {c.ctid: c for c in queries.cts(self.store, tenant=m.tenant)}
        for c in m.cts:
            ct = cts.get(c.ctid)
            if ct is None or ct.rack != rack:
                return False, f"CT {c.ctid} is not configured in {rack_name(rack)}"
            if ct.admst == "DOWN":
                continue
            up = [hn for hn, opst in obs.where.get(c.ctid, {}).items() if opst == "UP" and obs.known(hn, now,
                                                                                                  self.reconcile)]
            if len(up) != 1:
                return False, f"CT {c.ctid} is not UP in {rack_name(rack)} yet"
        if self.dns_pending is not None:
            left = self.dns_pending(self.store, self._names(m, cts.values(), rack))
            if left:
                return False, f"DNS: {left[0]} not published yet" + (f" (+{len(left) - 1})" if len(left) > 1 else "")
        return True, ""

    def _names(self, m: moves.Move, cts: Any, rack: int) -> set[str]:
        """The tenant's DNS names once it lives in `rack` (dnsroutes/records.py makes them)."""
        z = records.zones(self.dc)
        return ({records.absolute(f"{c.hostname}.{rack_name(rack)}.{z.infra}") for c in cts}
                | {records.absolute(f"{m.tenant}.{z.tenant}")}
                | {records.absolute(f"{service}.{m.tenant}.{z.tenant}") for service in m.routes})

    def _refused(self, m: moves.Move, rack: int) -> str:
        """Why the tenant cannot start in `rack` at all: a CT every usable HN there refused."""
        hns = {n.hostname for n in queries.nodes(self.store, rack=rack) if n.role == "compute" and not n.drained}
        for c in m.cts:
            why = moves.refusals(self.store, c.ctid, rack, self.store.now())
            if hns and hns <= why.keys():
                return f"every HN of {rack_name(rack)} rejected CT {c.ctid}: " + "; ".join(
                    f"{hn}: {r}" for hn, r in sorted(why.items()))
        return ""


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class Mover(threading.Thread):
    """The daemon's thread: runs this rack's moves while `lease_of()` says it leads."""

    def __init__(self, store_path: Locator, dc: DcTemplate, slot: int, make_storage: Callable[[Store], Any],
                 settings: MoveSettings, reconcile: Settings, dns_pending: Pending | None,
                 dead_after: float = 16.0) -> None:
        super().__init__(name="mover", daemon=True)
        self.store_path, self.dc, self.slot, self.make_storage = store_path, dc, slot, make_storage
        self.settings, self.reconcile, self.dns_pending, self.dead_after = settings, reconcile, dns_pending, dead_after
        self.stopping, self.wake = threading.Event(), threading.Event()
        self.lease_of: Callable[[], leases.Lease | None] = lambda: None
        self._trouble = ""
        self._said: dict[int, str] = {}

    def run(self) -> None:
        store: Store | None = None
        runner: MoveRunner | None = None
        while not self.stopping.is_set():
            busy = False
            lease = self.lease_of()
            try:
                if lease is not None:
                    if store is None:
                        store = open_store(self.store_path)
                        runner = MoveRunner(store, self.dc, self.slot, self.make_storage(store), self.settings,
                                            self.reconcile, self.dns_pending, self.dead_after)
                        runner.leading = lambda: self.lease_of() is not None and not self.stopping.is_set()
                    store.fence = lambda s, held=lease: leases.check(s, held)
                    assert runner is not None
                    busy = self._round(store, runner)
                    self._trouble = ""
            except CtmError as exc:  # the store, or a move's record: said once, tried again
                if str(exc) != self._trouble:
                    self._trouble = str(exc)
                    log.warning("moves: %s; retrying", exc)
                if store is not None:
                    store.close()
                store = runner = None
                self.stopping.wait(1.0)
            self.wake.wait(0.1 if busy else 0.5)
            self.wake.clear()
        if store is not None:
            store.close()

    def _round(self, store: Store, runner: MoveRunner) -> bool:
        """Step every open move into this rack until none moves on; True if one is waiting."""
        waiting = False
        open_moves = moves.to_run(store, self.slot)
        if open_moves and hasattr(runner.storage, "learn"):  # storage nodes of racks installed since
            runner.storage.learn({n.hostname: n.ip for n in queries.nodes(store) if n.role == "storage"})
        for m in open_moves:
            try:
                for _ in range(20):
                    if self.stopping.is_set() or self.lease_of() is None:
                        return False
                    after = runner.step(m)
                    if (after.phase, after.step, after.passes) == (m.phase, m.step, m.passes):
                        break
                    m = after
            except CtmError as exc:  # this move's trouble is said (once) and tried again; the others go on
                if self._said.get(m.id) != str(exc):
                    self._said[m.id] = str(exc)
                    log.warning("move %d (%s): %s; retrying", m.id, m.tenant, exc)
            waiting = waiting or m.open
        return waiting
