"""The leader's workflows, stepped from its own loop (no thread, no clock of
their own): tenant moves. A mixin of `Manager` (manager/daemon.py).

Two roles, each rack's leader plays both:
  - certify: for every held tenant whose CTs are configured in this rack, decide
    (reconcile/release.py) whether none of them runs or can run on its HNs, hand
    out the stops that prove it, and write the certificate under this epoch and
    the configuration version it acted on (store/moveacks.py);
  - run: step every open move into this rack (reconcile/movesteps.advance) with
    facts read from the store, write what it says in one fenced transaction,
    then hand its storage effects out through the storage port; their outcome
    comes back like an action's result.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..dc.model import rack_name
from ..dnsroutes import records
from ..errors import CtmError, InputError
from ..operations import moves as moveops
from ..reconcile import release
from ..reconcile.movesteps import advance, rollback
from ..reconcile.moving import Effect, EffectKind, Facts, Move, Outcome, Phase, Step
from ..reconcile.state import Action
from ..store import loop as persist
from ..store import moveacks, moves, queries
from .core import RUNNING
from .ports import Pending

if TYPE_CHECKING:
    from ..dc.model import DcTemplate
    from ..store.db import Store
    from .config import ManagerConfig
    from .core import Core
    from .effects import Storage
    from .leadership import Leadership
    from .ports import Events

log = logging.getLogger(__name__)


class Changed(CtmError):
    """The move's row changed between reading it and writing its step: read again."""


def _state(m: Move) -> tuple[object, ...]:
    return m.phase, m.step, m.flipped, m.hold, m.aborting, m.passes, m.sealed, m.finished_at
MOVES_EVERY = 0.1  # s between two looks while a tenant is held or a move is open: its downtime runs (two reads)
IDLE_EVERY = 2.0  # s between looks while none is
RETRY_EVERY = 5.0  # s after a failed batch of effects before the same step hands them out again


class Workflows:
    # What `Manager` provides (manager/daemon.py).
    store: Store
    dc: DcTemplate
    config: ManagerConfig
    events: Events
    core: Core | None
    leadership: Leadership
    storage: Storage | None
    dns_pending: Pending | None
    move_results: deque[tuple[int, str, int, Outcome]]
    clock: Callable[[], float]

    def _init_workflows(self) -> None:
        self._inflight: dict[int, tuple[str, tuple[Effect, ...]]] = {}  # move -> (step key, its effects)
        self._outcomes: dict[int, tuple[str, Outcome]] = {}
        self._retry_at: dict[int, float] = {}
        self._certified: dict[tuple[int, int], tuple[bool, str]] = {}  # what this leader wrote last
        self._cancelled: set[int] = set()  # moves whose pulls in flight were told to stop
        self.next_moves = 0.0

    def _hand_out_all(self, kept: list[tuple[Action, int]], cts: Any) -> None:
        raise NotImplementedError  # Manager's

    # ---- certify --------------------------------------------------------------
    def certify(self, now: float) -> bool:
        """Whether this rack holds a tenant for a move (then look again soon)."""
        core = self.core
        assert core is not None
        slot, epoch = self.config.slot, self.leadership.epoch
        held = moveacks.held_in(self.store, slot)
        if not held or not core.quorum:  # as plan(): a leader acts only with quorum, never while warming up
            return bool(held)
        version = self.store.config_version()
        listed = {ctid: set(where) for ctid, where in core.observed.where.items()}
        busy = {ctid for (ctid, _), until in core.busy.items() if until == RUNNING}
        for m in held:
            ctids = [c.ctid for c in m.cts]
            if not set(ctids) <= core.configured.held:
                continue  # this leader's configuration does not show the hold yet: it acknowledges nothing
            v = release.verdict(ctids, moveacks.intents(self.store, ctids, slot), listed, core.observed.dead, busy,
                                epoch, now, self.config.action_timeout)
            stops = [a for a in v.stops if (a.ctid, a.hn) not in core.busy]
            if stops:
                for a in stops:
                    core.busy[a.ctid, a.hn] = RUNNING
                try:
                    with self.store.transaction(config=False):
                        kept = persist.journal(self.store, stops, now, slot, epoch)
                except CtmError:
                    core.abandon(stops)  # not recorded: not handed out, and not in flight
                    raise
                self._hand_out_all(kept, core.configured.cts)
            if self._certified.get((m.id, slot)) != (v.released, v.why):
                with self.store.transaction(config=False):
                    wrote = moveacks.certify(self.store, m, slot, epoch, version, v.released, v.why,
                                             self.store.now())
                self._certified[m.id, slot] = (v.released, v.why)
                if wrote and v.released:
                    self.events.leadership(f"move {m.id} ({m.tenant}): rack-{slot} let every CT go (epoch {epoch}, "
                                           f"configuration version {version})")
        return True

    # ---- run --------------------------------------------------------------------
    def run_moves(self) -> bool:
        """Step every open move into this rack; whether one is open."""
        while self.move_results:
            move_id, key, epoch, outcome = self.move_results.popleft()
            if self._inflight.get(move_id, ("", ()))[0] == key and epoch == self.leadership.epoch:
                del self._inflight[move_id]
                self._cancelled.discard(move_id)
                self._outcomes[move_id] = (key, outcome)
        open_moves = moves.to_run(self.store, self.config.slot)
        for m in open_moves:
            try:
                for _ in range(8):  # steps that need no effect follow at once
                    after = self._step_move(m)
                    if after is None:
                        break
                    m = after
            except Changed as exc:
                log.info("%s", exc)
            except CtmError as exc:  # this move's trouble is said and tried again; the others go on
                log.warning("move %d (%s): %s; retrying", m.id, m.tenant, exc)
        return bool(open_moves)

    def stop_moves(self) -> None:
        """No longer leading: cancel the pulls in flight (the next leader pulls again)."""
        if self.storage is not None:
            for _, effects in self._inflight.values():
                self.storage.cancel(effects)
        self._inflight.clear()
        self._outcomes.clear()
        self._certified.clear()
        self._cancelled.clear()

    def _step_move(self, m: Move) -> Move | None:
        key = f"{m.phase}/{m.step}/{m.passes}"
        if m.id in self._inflight:
            if m.aborting and self.storage is not None and m.id not in self._cancelled:
                self._cancelled.add(m.id)  # once: the pull ends, and its outcome comes back as for any batch
                self.storage.cancel(self._inflight[m.id][1])
            return None
        got = self._outcomes.pop(m.id, None)
        outcome = got[1] if got is not None and got[0] == key else None
        now = self.store.now()
        if outcome is None and now < self._retry_at.get(m.id, 0.0):
            return None
        if outcome is not None and not outcome.ok:
            self._retry_at[m.id] = now + RETRY_EVERY
            if outcome.stale:  # only a newer runner of this move has a newer token: this one is deposed
                log.warning("move %d (%s): %s: another manager runs this move now; waiting", m.id, m.tenant,
                            outcome.error)
        step = advance(m, self._facts(m, now, outcome))
        if step.idle:
            return None
        if step.effects and not self._may_hand_out(m, step.effects):
            raise CtmError(f"a CT of tenant {m.tenant} is configured on the storage node its copy would be removed "
                           "from: not removed")
        if step.effects and self.storage is not None:
            self.storage.learn({n.hostname: n.ip for n in queries.nodes(self.store) if n.role == "storage"})
        after = self._write(m, step, now)
        if step.effects and self.storage is not None and self.leadership.leading():
            self._inflight[m.id] = (f"{after.phase}/{after.step}/{after.passes}", step.effects)
            epoch = self.leadership.epoch
            key_now = self._inflight[m.id][0]
            self.storage.submit(step.effects, m.bwlimit or self.config.moves.bwlimit,
                                lambda o: self.move_results.append((m.id, key_now, epoch, o)))
            return None
        return after

    def _write(self, m: Move, step: Any, now: float) -> Move:
        changes = dict(step.changes)
        try:
            with self.store.transaction(config=step.config):
                now_row = moves.get(self.store, m.id)  # check-then-act: an abort, or the source releasing an
                if _state(now_row) != _state(m):  # overdue hold, may have landed since this step was decided
                    raise Changed(f"move {m.id} changed meanwhile ({now_row.phase} {now_row.step}); stepped again")
                if changes.get("hold") is True:  # a new hold: seen from the next configuration version on
                    changes["hold_version"] = self.store.config_version() + 1
                    moveacks.forget(self.store, m.id, m.rack)
                if step.sizes:
                    moves.record_sizes(self.store, m, step.sizes)
                after = moves.update(self.store, m, now, step.say, **changes) if changes or step.say else m
                if step.flip is not None:
                    after = moveops.flip(self.store, self.dc, after, now, forward=step.flip)
        except InputError as exc:  # no free address there, a CT edited meanwhile: nothing of the flip was written
            back = rollback(m, self._facts(m, now, None), f"cannot configure the CTs in {rack_name(m.other)}: {exc}")
            with self.store.transaction(config=back.config):
                return moves.update(self.store, m, now, back.say, **back.changes)
        if step.say:
            log.info("move %d (%s): %s", m.id, m.tenant, step.say)
        return after

    def _may_hand_out(self, m: Move, effects: tuple[Effect, ...]) -> bool:
        """A removal never takes the copy a CT is configured to use now."""
        current = {c.ctid: c.storage for c in queries.cts(self.store, tenant=m.tenant)}
        return not any(e.kind == EffectKind.REMOVE and current.get(e.ctid) == e.node for e in effects)

    # ---- facts --------------------------------------------------------------------
    def _facts(self, m: Move, now: float, outcome: Outcome | None) -> Facts:
        s = self.config.moves
        online, refused = "?", ""
        if m.step == Step.START or (m.phase == Phase.ROLLBACK and m.step == Step.START):
            online = self._online_in(m, m.rack)
            refused = self._refused(m, m.rack) if online else ""
        return Facts(now, self.leadership.epoch, moveacks.release_of(self.store, m.id, m.rack), online, refused,
                     outcome, m.bwlimit or s.bwlimit, s.max_passes, s.stop_timeout, s.start_timeout)

    def _online_in(self, m: Move, rack: int) -> str:
        """'' when every CT of the tenant (ADMST UP) runs on one HN of `rack` and its
        DNS names are published; else why not."""
        obs = persist.observed(self.store, rack, store_clock=True)
        now = self.store.now()
        cts = {c.ctid: c for c in queries.cts(self.store, tenant=m.tenant)}
        for c in m.cts:
            ct = cts.get(c.ctid)
            if ct is None or ct.rack != rack:
                return f"CT {c.ctid} is not configured in {rack_name(rack)}"
            if ct.admst == "DOWN":
                continue
            up = [hn for hn, opst in obs.where.get(c.ctid, {}).items()
                  if opst == "UP" and obs.known(hn, now, self.config.settings)]
            if len(up) != 1:
                return f"CT {c.ctid} is not UP in {rack_name(rack)} yet"
        if self.dns_pending is not None:
            z = records.zones(self.dc)
            names = ({records.absolute(f"{c.hostname}.{rack_name(rack)}.{z.infra}") for c in cts.values()}
                     | {records.absolute(f"{m.tenant}.{z.tenant}")}
                     | {records.absolute(f"{service}.{m.tenant}.{z.tenant}") for service in m.routes})
            left = self.dns_pending(self.store, names)
            if left:
                return f"DNS: {left[0]} not published yet" + (f" (+{len(left) - 1})" if len(left) > 1 else "")
        return ""

    def _refused(self, m: Move, rack: int) -> str:
        """Why the tenant cannot start in `rack` at all: a CT every usable HN there refused."""
        hns = {n.hostname for n in queries.nodes(self.store, rack=rack) if n.role == "compute" and not n.drained}
        for c in m.cts:
            why = moves.refusals(self.store, c.ctid, rack, self.store.now())
            if hns and hns <= why.keys():
                return f"every HN of {rack_name(rack)} rejected CT {c.ctid}: " + "; ".join(
                    f"{hn}: {r}" for hn, r in sorted(why.items()))
        return ""
