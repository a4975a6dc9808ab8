"""The tenant move machine, pure (reconcile/movesteps.advance): a move as the
store holds it and the facts of one look -> what is written and handed out.
`Run` plays what manager/workflows.py does with each answer: the changes are
written (a new hold is seen from the next configuration version), a flip moves
the CTs and ends the hold, the effects are kept in order. The store's side of
the same steps is in test_moves.py."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ctmanager.reconcile.movesteps import advance, rollback
from ctmanager.reconcile.moving import (
    Advance,
    Effect,
    Facts,
    Move,
    MoveCt,
    Outcome,
    Phase,
    Release,
    Step,
    fencing_token,
)
from ctmanager.reconcile.moving import EffectKind as K

S1, S2, D = "storage-101-1", "storage-101-2", "storage-102-3"
CTS = (MoveCt(1001, "myhost", "10.101.4.10", "", S1, D), MoveCt(1002, "myhost-db", "10.101.4.11", "", S2, D))
EPOCH = 7
TOKEN = fencing_token(3, EPOCH)  # move 3 (every move here), by a runner of epoch 7
T0 = 1000.0
OK = Outcome(True, delta=1 << 10, took=0.5, sizes=((1001, 5 << 20, 10), (1002, 1 << 20, 3)))
BIG = Outcome(True, delta=50 << 20, took=9.0)
FAILED = Outcome(False, "rsync was killed (exit 20)")
STALE = Outcome(False, "stale token 7: a pull of CT 1001 with token 8 came here since", stale=True)


def move(**kw: Any) -> Move:
    m = Move(3, "myhost", 101, 102, "copy", "", False, False, True, False, False, 0, {}, 0, 0, 0, 0.0, 0.0, None,
             None, None, None, None, None, "", (), CTS)
    return replace(m, **kw)


def cut(step: str, **kw: Any) -> Move:
    """A forward cutover at `step` (held at the source since T0, version 41)."""
    return move(**{"phase": "cutover", "step": step, "hold": True, "held_at": T0, "stopped_at": T0,
                   "deadline": T0 + 60, "hold_version": 41, "sealed": step in ("stop", "final"), **kw})


def back(step: str, **kw: Any) -> Move:
    """A rollback after the flip (held in the destination, version 51)."""
    return move(**{"phase": "rollback", "step": step, "hold": True, "flipped": True, "held_at": T0,
                   "stopped_at": T0 - 30, "deadline": T0 + 60, "hold_version": 51, "sealed": step in ("stop", "final"),
                   "error": "not online in rack-102", **kw})


def facts(now: float = T0 + 1, **kw: Any) -> Facts:
    return Facts(now, kw.pop("epoch", EPOCH), **kw)


def cert(m: Move, *, rack: int | None = None, version: int | None = None, released: bool = True) -> Release:
    """Rack m.rack's leader's certificate (of another rack, an older version, not released)."""
    return Release(m.rack if rack is None else rack, 5, m.hold_version if version is None else version, released,
                   "" if released else "CT 1001: waiting for hn-101-1 to stop it")


def pulls(src: tuple[str, ...], dst: tuple[str, ...], token: int = TOKEN, first: bool = False) -> tuple[Effect, ...]:
    return tuple(Effect(K.PULL, d, c.ctid, source=s, token=token, check_space=first)
                 for c, s, d in zip(CTS, src, dst))


def side(kind: K, nodes: tuple[str, ...], token: int = TOKEN) -> tuple[Effect, ...]:
    return tuple(Effect(kind, n, c.ctid, token=token) for c, n in zip(CTS, nodes))


SRC, DST = (S1, S2), (D, D)


class Run:
    """A move stepped as manager/workflows.py steps it; `trail`: the effects and flips, in order."""

    def __init__(self, m: Move, now: float = T0) -> None:
        self.m, self.now, self.version = m, now, 40
        self.trail: list[Any] = []

    def step(self, **kw: Any) -> Advance:
        a = advance(self.m, facts(self.now, **kw))
        changes = dict(a.changes)
        if changes.get("hold") is True:
            changes["hold_version"] = self.version + 1
        self.version += a.config
        m = replace(self.m, **changes, log=self.m.log + ((a.say,) if a.say else ()))
        if a.flip is not None:
            m = replace(m, flipped=a.flip, hold=False)
            self.trail.append(("flip", a.flip))
        self.trail += a.effects
        self.m = m
        return a

    def at(self) -> tuple[str, str, bool, bool]:
        return self.m.phase, self.m.step, self.m.hold, self.m.flipped


def test_a_forward_move_copies_stops_seals_flips_starts_and_deletes() -> None:
    r = Run(move())
    assert r.step().effects == pulls(SRC, DST, first=True)  # the first pass checks the room there
    assert r.m.token == TOKEN
    r.step(outcome=BIG)  # much copied: another pass, no room check
    assert (r.at(), r.m.passes, r.m.bytes) == (("copy", "", False, False), 1, 50 << 20)
    assert r.step().effects == pulls(SRC, DST)
    a = r.step(outcome=OK)  # a pass that moved little: hold the tenant for the final copy
    assert r.at() == ("cutover", "seal", True, False) and a.config and a.sizes == OK.sizes
    assert (r.m.passes, r.m.stopped_at, r.m.deadline, r.m.hold_version) == (2, T0, T0 + 60, 41)
    # sealed as the hold begins, while the source stops the CTs (it needs no certificate)
    assert r.step().effects == side(K.SEAL, SRC)
    assert (r.m.step, r.m.sealed) == ("seal", True)  # (sealed from the hand-out on: an abort leaves it to the runner)
    a = r.step(outcome=OK)
    assert r.m.step == "stop" and not a.effects and "/data sealed on storage-101-1, storage-101-2" in a.say
    for release in (None, cert(r.m, released=False), cert(r.m, version=40), cert(r.m, rack=102),
                    cert(r.m, version=0)):
        assert r.step(release=release).idle  # nothing but the source's release of this hold lets it on
    r.now = T0 + 5
    a = r.step(release=cert(r.m))
    assert r.m.step == "final" and not a.effects and "let every CT go at configuration version 41" in a.say
    # a new leader's step: its epoch fences the copy
    assert r.step(epoch=9).effects == pulls(SRC, DST, token=fencing_token(3, 9))
    assert (r.m.step, r.m.sealed, r.m.token) == ("final", True, fencing_token(3, 9))
    a = r.step(epoch=9, outcome=OK)
    assert a.flip is True and a.config and r.at() == ("cutover", "start", False, True)
    assert (r.m.passes, r.m.deadline) == (3, T0 + 5 + 120)
    assert r.step(online="CT 1001 is not UP in rack-102 yet").idle
    r.now = T0 + 8
    r.step(online="")
    assert (r.m.phase, r.m.online_at, r.m.downtime, r.m.deadline) == ("online", T0 + 8, 8.0, None)
    assert [e for e in r.trail if getattr(e, "kind", None) == K.REMOVE] == []  # nothing deleted before online
    r.step()
    assert r.m.phase == "delete"
    assert r.step().effects == (Effect(K.REMOVE, S1, 1001, token=TOKEN), Effect(K.REMOVE, S2, 1002, token=TOKEN))
    r.step(outcome=FAILED)  # tried again, said in the log: a move that ends well has no error
    assert (r.m.phase, r.m.error) == ("delete", "") and "failed (retried)" in r.m.log[-1]
    assert r.step().effects == side(K.REMOVE, SRC)
    r.step(outcome=OK)
    assert (r.m.phase, r.m.finished_at, r.m.error) == ("done", T0 + 8, "")
    assert r.step().idle and r.step(outcome=OK).idle  # finished: nothing more, ever


def test_no_precopy_holds_at_once_and_max_passes_end_the_copy() -> None:
    a = advance(move(precopy=False), facts())
    assert a.changes["phase"] == "cutover" and a.changes["hold"] is True and a.config and not a.effects
    a = advance(move(passes=4), facts(outcome=BIG))  # the 5th pass still moved much: hold anyway
    assert (a.changes["phase"], a.changes["passes"]) == ("cutover", 5)


def test_keep_source_rests_online() -> None:
    assert advance(move(phase="online", keep_source=True), facts()).idle
    assert advance(move(phase="online"), facts()).changes == {"phase": "delete", "step": ""}


@pytest.mark.parametrize("release", [None, "not released", "older"])
def test_a_stop_timeout_rolls_back_unsealing_before_the_hold_ends(release: str | None) -> None:
    m = cut("stop")
    got = {None: None, "not released": cert(m, released=False), "older": cert(m, version=40)}[release]
    assert advance(m, facts(T0 + 60, release=got)).idle  # the deadline is not past yet
    r = Run(m, T0 + 61)
    r.step(release=got)
    assert r.at() == ("rollback", "unseal", True, False) and "did not let the tenant go within 60 s" in r.m.error
    assert r.step().effects == side(K.UNSEAL, SRC)  # a seal may be on: lifted before the hold ends
    r.step(outcome=FAILED)
    assert r.at() == ("rollback", "unseal", True, False)  # still held: tried again
    assert "did not let" in r.m.error and "unsealing failed (retried)" in r.m.log[-1]
    assert r.step().effects == side(K.UNSEAL, SRC)
    a = r.step(outcome=OK)
    assert r.at() == ("rollback", "start", False, False) and a.config and a.flip is None and not r.m.sealed
    assert r.step(online="CT 1001 is not UP in rack-101 yet").idle
    r.step(online="")
    assert r.m.step == "cleanup"
    assert r.step().effects == (Effect(K.REMOVE, D, 1001, token=TOKEN), Effect(K.REMOVE, D, 1002, token=TOKEN))
    r.step(outcome=OK)
    assert (r.m.phase, r.m.finished_at) == ("rolled-back", T0 + 61) and "did not let" in r.m.error
    assert ("flip", False) not in r.trail and ("flip", True) not in r.trail


@pytest.mark.parametrize("m,outcome", [
    (move(), None), (move(passes=1), OK), (cut("seal"), None), (cut("seal"), OK), (cut("stop"), None),
    (cut("final"), None), (cut("final"), OK),  # an abort wins over the flip
], ids=["copy", "copy-done", "seal", "seal-done", "stop", "final", "final-done"])
def test_an_abort_before_the_flip_rolls_back_at_the_source(m: Move, outcome: Outcome | None) -> None:
    a = advance(replace(m, aborting=True), facts(release=cert(m), outcome=outcome))
    assert a.flip is None and not a.effects
    assert {k: a.changes[k] for k in ("phase", "step", "error", "aborting")} == {
        "phase": "rollback", "step": "unseal", "error": "aborted by ops", "aborting": False}


def test_an_abort_after_the_flip_is_a_cutover_back_unless_it_is_online_already() -> None:
    m = cut("start", flipped=True, hold=False, deadline=T0 + 120, aborting=True)
    a = advance(m, facts(online="CT 1001 is not UP in rack-102 yet"))
    assert (a.changes["phase"], a.changes["step"], a.changes["hold"], a.flip) == ("rollback", "seal", True, None)
    assert a.config and a.changes["error"] == "aborted by ops"
    assert advance(m, facts(online="")).changes["phase"] == "online"  # too late: it runs there


@pytest.mark.parametrize("m,outcome,error", [
    (move(), FAILED, "copy pass 1 failed: rsync was killed"),
    (cut("seal", sealed=True), FAILED, "sealing the /data of rack-101 failed: rsync was killed"),
    (cut("final"), FAILED, "the final copy failed: rsync was killed"),
    (cut("start", flipped=True, hold=False), None, "not online in rack-102 within 120 s"),
])
def test_a_failure_rolls_back(m: Move, outcome: Outcome | None, error: str) -> None:
    a = advance(m, facts(T0 + 200, outcome=outcome, online="CT 1001 is not UP in rack-102 yet"))
    assert a.changes["phase"] == "rollback" and error in a.changes["error"] and a.flip is None
    assert a.changes["step"] == ("seal" if m.flipped else "unseal")


def test_every_hn_refusing_it_rolls_back_at_once() -> None:
    m = cut("start", flipped=True, hold=False, deadline=T0 + 120)
    a = advance(m, facts(online="CT 1001 is not UP", refused="every HN of rack-102 rejected CT 1001: no memory"))
    assert a.changes["step"] == "seal" and "rejected CT 1001" in a.changes["error"]


@pytest.mark.parametrize("m", [
    move(), cut("seal"), cut("final"), move(phase="delete"), move(phase="rollback", step="unseal", hold=True),
    move(phase="rollback", step="cleanup"), back("seal"), back("final"), back("unseal"),
], ids=lambda m: f"{m.phase}/{m.step}/{'flipped' if m.flipped else 'src'}")
def test_a_stale_outcome_does_nothing(m: Move) -> None:
    """A storage node saw a newer token: another leader runs the move."""
    assert advance(m, facts(T0 + 500, outcome=STALE, release=cert(m))) == Advance()


def test_a_rollback_after_the_flip_copies_the_destination_back_before_flipping_back() -> None:
    r = Run(cut("start", flipped=True, hold=False, sealed=True, deadline=T0 + 120), T0 + 121)
    r.version = 50
    a = r.step(online="CT 1001 is not UP in rack-102 yet")
    assert r.at() == ("rollback", "seal", True, True) and a.config and r.m.hold_version == 51
    assert not r.m.sealed  # the leaving side is the destination now: not sealed yet
    assert r.step().effects == side(K.SEAL, DST)  # sealed there as the hold begins
    r.step(outcome=OK)
    assert (r.m.step, r.m.sealed) == ("stop", True)
    for release in (None, cert(r.m, rack=101), cert(r.m, version=50), cert(r.m, released=False)):
        r.now += 1000  # however long: it must stop there before it may start here
        assert r.step(release=release).idle
    r.step(release=cert(r.m))
    assert r.m.step == "final"
    assert r.step().effects == pulls(DST, SRC)  # what the tenant wrote there comes back
    a = r.step(outcome=OK)
    assert r.at() == ("rollback", "unseal", True, True) and a.flip is None
    assert r.step().effects == side(K.UNSEAL, SRC)
    a = r.step(outcome=OK)
    assert a.flip is False and a.config and r.at() == ("rollback", "start", False, False)
    r.step(online="")
    assert r.m.step == "cleanup"
    assert r.step().effects == side(K.REMOVE, DST)
    r.step(outcome=OK)
    assert r.m.phase == "rolled-back" and "not online in rack-102" in r.m.error
    order = [x if isinstance(x, tuple) else (x.kind.value, x.node) for x in r.trail]
    assert order.index(("pull", S1)) < order.index(("unseal", S1)) < order.index(("flip", False)) \
        < order.index(("remove", D))
    assert order.index(("seal", D)) < order.index(("pull", S1))  # sealed there before the copy back


def test_a_failed_step_of_the_way_back_holds_again_for_a_new_certificate() -> None:
    a = advance(back("final"), facts(outcome=FAILED))
    assert (a.changes["step"], a.changes["hold"], a.changes["sealed"]) == ("seal", True, False) and a.config
    a = advance(back("unseal"), facts(outcome=FAILED))  # the copy back is in: unsealing is retried
    assert a.changes == {} and "unsealing failed (retried)" in a.say and a.flip is None


def test_rollback_is_told_where_the_cts_are() -> None:
    assert rollback(cut("final"), facts(), "x").changes["step"] == "unseal"
    assert rollback(cut("start", flipped=True), facts(), "x").changes["step"] == "seal"


PHASE_STEPS = [(p, s) for p in Phase for s in Step]


@pytest.mark.parametrize("phase,step", PHASE_STEPS, ids=[f"{p.value}/{s.value or '-'}" for p, s in PHASE_STEPS])
def test_every_phase_and_step_has_an_answer(phase: Phase, step: Step) -> None:
    for flipped in (False, True):
        for aborting in (False, True):
            m = move(phase=phase.value, step=step.value, flipped=flipped, aborting=aborting, hold=True,
                     hold_version=41, deadline=T0, finished_at=T0 if phase in (Phase.DONE, Phase.ROLLED_BACK) else None)
            for outcome in (None, OK, FAILED, STALE):
                for f in (facts(outcome=outcome), facts(T0 + 99, outcome=outcome, release=cert(m), online="")):
                    a = advance(m, f)
                    assert isinstance(a, Advance)
                    assert set(a.changes) <= set(Move.__dataclass_fields__)
                    if "phase" in a.changes:
                        assert a.changes["phase"] in {p.value for p in Phase}
                    if "step" in a.changes:
                        assert a.changes["step"] in {s.value for s in Step}


def test_a_row_held_but_not_sealed_seals_before_anything_else() -> None:
    """A row an older runner left at `stop` before any seal: sealed first, even if released."""
    m = cut("stop", sealed=False)
    a = advance(m, facts(release=cert(m)))
    assert a.effects == side(K.SEAL, SRC) and a.changes["sealed"] is True
    assert advance(replace(m, sealed=True), facts(outcome=OK, release=cert(m))).changes == {"step": "stop"}
