"""`advance(move, facts)`: the next step of a tenant move (reconcile/moving.py
says what each phase means). Pure and total: every (phase, step) the store can
hold has one answer, and taking the same step again is harmless, so a manager
that dies anywhere is replaced by one that asks again and gets the same effects.
"""

from __future__ import annotations

from ..dc.model import rack_name
from .moving import WAIT, Advance, Effect, EffectKind, Facts, Move, Outcome, Phase, Step, fencing_token


def advance(m: Move, f: Facts) -> Advance:
    if not m.open:
        return WAIT
    if m.phase == Phase.COPY:
        return _copy(m, f)
    if m.phase == Phase.CUTOVER:
        if m.aborting and m.step != Step.START:
            return rollback(m, f, "aborted by ops")
        return {Step.SEAL: _seal, Step.STOP: _stop, Step.FINAL: _final}.get(Step(m.step), _start)(m, f)
    if m.phase == Phase.ONLINE:
        return WAIT if m.keep_source else Advance({"phase": Phase.DELETE.value, "step": ""},
                                                   "deleting the source copy")
    if m.phase == Phase.DELETE:
        return _remove(m, f, m.src, {"phase": Phase.DONE.value, "step": "", "finished_at": f.now},
                       "source copy deleted")
    if m.phase == Phase.ROLLBACK:
        return _back(m, f)
    return WAIT


def _pulls(m: Move, f: Facts, to: int, first: bool = False) -> tuple[Effect, ...]:
    """Pull every CT's /data from the side of rack m.rack to the side of rack `to`."""
    src = {ctid: node for node, ctid in m.side(m.rack)}
    dst = {ctid: node for node, ctid in m.side(to)}
    return tuple(Effect(EffectKind.PULL, dst[c.ctid], c.ctid, source=src[c.ctid], token=_token(m, f), check_space=first)
                 for c in m.cts)


def _token(m: Move, f: Facts) -> int:
    return fencing_token(m.id, f.epoch)


def _side(m: Move, f: Facts, kind: EffectKind, rack: int) -> tuple[Effect, ...]:
    return tuple(Effect(kind, node, ctid, token=_token(m, f)) for node, ctid in m.side(rack))


def _failed(o: Outcome) -> bool:
    return not o.ok and not o.stale


# ---- copy ----------------------------------------------------------------------
def _copy(m: Move, f: Facts) -> Advance:
    if m.aborting:
        return rollback(m, f, "aborted by ops")
    if not m.precopy:
        return _begin_cutover(m, f, "no pre-copy asked: stopping the tenant for one whole copy")
    o = f.outcome
    if o is None:
        return Advance(effects=_pulls(m, f, m.dst, first=m.passes == 0), changes={"token": _token(m, f)})
    if o.stale:
        return WAIT
    if not o.ok:
        return rollback(m, f, f"copy pass {m.passes + 1} failed: {o.error}")
    n = m.passes + 1
    said = f"pass {n}: {_mib(o.delta)} copied in {o.took:.1f} s"
    counts = {"passes": n, "bytes": m.bytes + o.delta, "last_delta": o.delta}
    if o.delta <= max(f.bwlimit, 1 << 20) or n >= f.max_passes:
        cut = _begin_cutover(m, f, f"{said}; stopping the tenant at {rack_name(m.src)} for the final copy")
        return Advance({**counts, **cut.changes}, cut.say, config=True, sizes=o.sizes)
    return Advance(counts, said, sizes=o.sizes)


# ---- cutover (either way: from m.rack to m.other) -----------------------------------------
def _begin_cutover(m: Move, f: Facts, say: str) -> Advance:
    return Advance({"phase": Phase.CUTOVER.value, "step": Step.SEAL.value, "hold": True, "held_at": f.now,
                    "stopped_at": f.now, "deadline": f.now + f.stop_timeout}, say, config=True)


def _released(m: Move, f: Facts) -> bool:
    r = f.release
    return r is not None and r.released and r.rack == m.rack and r.version >= m.hold_version > 0


def _stop(m: Move, f: Facts) -> Advance:
    if not m.sealed or f.outcome is not None:  # a row held before it sealed (seal first), or that seal's outcome
        return _seal(m, f)
    if _released(m, f):
        assert f.release is not None
        return Advance({"step": Step.FINAL.value}, f"{rack_name(m.rack)}'s leader (epoch {f.release.epoch}) let "
                       f"every CT go at configuration version {f.release.version}")
    if f.now > (m.deadline or 0):
        why = f.release.detail if f.release is not None else "its leader has not answered"
        return rollback(m, f, f"{rack_name(m.rack)} did not let the tenant go within {f.stop_timeout:g} s: {why}")
    return WAIT


def _seal(m: Move, f: Facts) -> Advance:
    """Seal the leaving side's /data as the hold begins, while its leader stops the
    CTs: off the downtime's path, and a guard of its own from then on (ctagent
    refuses to start a CT on it, so a start decided before the hold landed fails
    there). A running CT goes on writing until its stop; the final copy waits for
    the certificate. `sealed` is written as the seal is handed out (it may be on
    from then: an abort leaves it to the runner, who holds the token)."""
    o = f.outcome
    if o is None:
        return Advance(effects=_side(m, f, EffectKind.SEAL, m.rack), changes={"token": _token(m, f), "sealed": True})
    if o.stale:
        return WAIT
    if not o.ok:
        return rollback(m, f, f"sealing the /data of {rack_name(m.rack)} failed: {o.error}")
    return Advance({"step": Step.STOP.value}, f"/data sealed on {_nodes(m, m.rack)}; waiting for the certificate "
                   f"of {rack_name(m.rack)}'s leader")


def _final(m: Move, f: Facts, failed: str = "the final copy failed") -> Advance:
    """The outcome of the final copy (a row left at step `final` takes it again)."""
    o = f.outcome
    if o is None:
        return Advance(effects=_pulls(m, f, m.other), changes={"token": _token(m, f)})
    if o.stale:
        return WAIT
    if not o.ok:
        return rollback(m, f, f"{failed}: {o.error}")
    counts = {"passes": m.passes + 1, "bytes": m.bytes + o.delta, "last_delta": o.delta, "sealed": True}
    if m.phase == Phase.ROLLBACK:  # the copy back is in: the source may run it again
        return Advance({**counts, "step": Step.UNSEAL.value}, f"copied back: {_mib(o.delta)} in {o.took:.1f} s",
                       sizes=o.sizes)
    return Advance({**counts, "step": Step.START.value, "deadline": f.now + f.start_timeout},
                   f"final pass: {_mib(o.delta)} in {o.took:.1f} s", flip=True, config=True, sizes=o.sizes)


def _start(m: Move, f: Facts) -> Advance:
    if not f.online:
        downtime = f.now - (m.stopped_at or f.now)
        return Advance({"phase": Phase.ONLINE.value, "step": "", "online_at": f.now, "downtime": downtime,
                        "deadline": None, "aborting": False}, f"online in {rack_name(m.dst)}: UP and resolvable; downtime "
                                           f"{downtime:.1f} s")
    if f.refused:
        return rollback(m, f, f.refused)
    if f.now > (m.deadline or 0):
        return rollback(m, f, f"not online in {rack_name(m.dst)} within {f.start_timeout:g} s: {f.online}")
    if m.aborting:
        return rollback(m, f, "aborted by ops")
    return WAIT


# ---- rollback ----------------------------------------------------------------------
def rollback(m: Move, f: Facts, error: str) -> Advance:
    """Back to the source. After the flip: a cutover the other way, the
    destination's /data copied back first (nothing it wrote is lost)."""
    base = {"phase": Phase.ROLLBACK.value, "error": error, "aborting": False}
    if m.flipped:
        return Advance({**base, "step": Step.SEAL.value, "hold": True, "held_at": f.now, "sealed": False,
                        "deadline": f.now + f.stop_timeout}, f"rolling back: {error}; holding it in "
                       f"{rack_name(m.dst)} to copy its /data back", config=True)
    return Advance({**base, "step": Step.UNSEAL.value, "deadline": f.now + f.start_timeout},
                   f"rolling back: {error}")


def _back(m: Move, f: Facts) -> Advance:
    step = Step(m.step)
    if m.flipped:  # configured in the destination, held: the way back is a cutover
        if step == Step.STOP:
            if not m.sealed or f.outcome is not None:  # (as forward)
                return _seal(m, f)
            if _released(m, f):
                return Advance({"step": Step.FINAL.value}, f"{rack_name(m.rack)} let every CT go")
            return WAIT  # however long: it must stop here before it may start there
        if step == Step.SEAL:
            return _seal(m, f)
        if step == Step.FINAL:
            return _final(m, f)
        if step == Step.UNSEAL:
            return _unseal(m, f, m.src, flip=False)
        return WAIT
    if step in (Step.UNSEAL, Step.STOP, Step.SEAL, Step.FINAL):  # (only UNSEAL is written; the others unseal too)
        return _unseal(m, f, m.src, flip=None)
    if step == Step.START:
        if not f.online:
            return Advance({"step": Step.CLEANUP.value}, f"online again in {rack_name(m.src)}")
        if f.now > (m.deadline or 0):
            return Advance({"step": Step.CLEANUP.value}, f"not UP in {rack_name(m.src)} yet ({f.online}); its "
                                                         "manager goes on trying")
        return WAIT
    return _remove(m, f, m.dst, {"phase": Phase.ROLLED_BACK.value, "step": "", "finished_at": f.now},
                   "partial copies removed")


def _unseal(m: Move, f: Facts, rack: int, flip: bool | None) -> Advance:
    """Unseal rack `rack`'s side, then let the tenant run there (flip=False: flip
    back to it first). Unsealed always, sealed or not by the record: idempotent,
    and a seal handed out before a rollback may have landed after it."""
    o = f.outcome
    if o is None:
        return Advance(effects=_side(m, f, EffectKind.UNSEAL, rack), changes={"token": _token(m, f)})
    if o.stale:
        return WAIT
    if not o.ok:  # the hold stays; the step is tried again (the move's error still says why it rolls back)
        return Advance(say=f"unsealing failed (retried): {o.error}")
    done = {"step": Step.START.value, "sealed": False, "hold": False, "deadline": f.now + f.start_timeout}
    if flip is False:
        return Advance(done, f"/data unsealed at {rack_name(rack)}", flip=False, config=True)
    return Advance(done, f"released at {rack_name(rack)}", config=True)


def _remove(m: Move, f: Facts, rack: int, then: dict[str, object], say: str) -> Advance:
    o = f.outcome
    if o is None:
        return Advance(effects=_side(m, f, EffectKind.REMOVE, rack))
    if o.stale:
        return WAIT
    if not o.ok:  # tried again; said in the log only (a move that ends well has no error)
        return Advance(say=f"removing the copies on {rack_name(rack)}'s side failed (retried): {o.error}")
    return Advance(dict(then), f"{say} ({_nodes(m, rack)})")


def _nodes(m: Move, rack: int) -> str:
    return ", ".join(sorted({n for n, _ in m.side(rack)}))


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
