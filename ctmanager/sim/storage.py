"""The simulated storage nodes: every CT's /data as a version number per node,
seals and fencing tokens as ctstorage keeps them, and the manager's storage port
(manager/effects.py) over them.

A running CT writes its /data when it starts and when it stops (and every
WRITE_EVERY s in between): each write is a new version of that CT's data. A pull
copies the source's version as it is when the pull ends. That is enough to catch
what matters, as invariants checked while the schedule runs:
  - a CT never starts on /data older than the newest version written anywhere
    (a stale copy: a lost write, e.g. a rollback that forgot the destination's);
  - after the final copy the source /data is never written (what it would
    write is lost). The seal goes on as the hold begins, while the CTs still
    run: their writes until the stop are what the final copy takes. The final
    copy is a pull from a sealed /data with a token at least the seal's (a
    deposed runner's late pass has an older one);
  - ctagent never hands a CT to the runtime to start on a /data sealed at
    that moment (it must refuse). A start that passed before the seal landed
    is in flight, as any start decided before the hold: the certificate waits
    for a stop after it, and the final copy for the certificate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..manager.effects import Done
from ..reconcile.moving import Effect, EffectKind, Outcome

if TYPE_CHECKING:
    from .ports import DcView

LATENCY = 0.1  # s an SSH command to a storage node takes
PULL_TIME = 0.5  # s one CT's pull takes
WRITE_EVERY = 2.0
MIB = 1 << 20


class SimData:
    def __init__(self, dc: DcView) -> None:
        self.dc = dc
        self.version: dict[tuple[str, int], int] = {}  # (node, CTID) -> its /data's version there
        self.newest: dict[int, int] = {}  # CTID -> the newest version written anywhere
        self.seals: dict[tuple[str, int], int] = {}  # sealed (node, CTID) -> token
        self.tokens: dict[tuple[str, int], int] = {}
        self.final: set[tuple[str, int]] = set()  # (node, CTID) the final copy was taken from (while sealed)

    def sealed(self, node: str, ctid: int) -> bool:
        return (node, ctid) in self.seals

    def write(self, node: str, ctid: int, who: str) -> None:
        if (node, ctid) in self.final:
            self.dc.violation(f"CT {ctid} on {who} wrote its /data on {node} after the final copy was taken")
        v = max(self.version.get((node, ctid), 0), self.newest.get(ctid, 0)) + 1
        if self.version.get((node, ctid), 0) < self.newest.get(ctid, 0):
            v = self.version.get((node, ctid), 0) + 1  # writing on a stale copy: a fork (reported at its start)
        self.version[node, ctid] = v
        self.newest[ctid] = max(self.newest.get(ctid, 0), v)

    def starting(self, node: str, ctid: int, who: str) -> None:
        if self.sealed(node, ctid):
            self.dc.violation(f"CT {ctid} was started on {who} on its sealed /data on {node}")

    def started(self, node: str, ctid: int, who: str) -> None:
        have, newest = self.version.get((node, ctid), 0), self.newest.get(ctid, 0)
        if have < newest:
            self.dc.violation(f"CT {ctid} came up on {who} on stale /data on {node} (version {have} < {newest})")
        self.write(node, ctid, who)

    # ---- ctstorage ---------------------------------------------------------------
    def pull(self, to: str, ctid: int, source: str, token: int) -> Outcome:
        if token < self.tokens.get((to, ctid), 0):
            return Outcome(False, f"stale token {token}", stale=True)
        self.tokens[to, ctid] = token
        if (source, ctid) not in self.version:
            return Outcome(False, f"{source} has no /data of CT {ctid}")
        if token >= self.seals.get((source, ctid), token + 1):
            self.final.add((source, ctid))
        before = self.version.get((to, ctid), 0)
        self.version[to, ctid] = self.version[source, ctid]
        moved = MIB if before != self.version[to, ctid] else 0
        return Outcome(True, delta=moved, took=PULL_TIME, sizes=((ctid, MIB, 1),))

    def seal(self, node: str, ctid: int, token: int) -> Outcome:
        self.seals[node, ctid] = max(token, self.seals.get((node, ctid), 0))
        return Outcome(True)

    def unseal(self, node: str, ctid: int, token: int) -> Outcome:
        if token < self.seals.get((node, ctid), 0):
            return Outcome(False, f"stale token {token}", stale=True)
        self.seals.pop((node, ctid), None)
        self.final.discard((node, ctid))
        return Outcome(True)

    def remove(self, node: str, ctid: int) -> Outcome:
        for d in (self.version, self.seals, self.tokens):
            d.pop((node, ctid), None)
        self.final.discard((node, ctid))
        return Outcome(True)


class SimStoragePort:
    """One manager's storage port: effects run after their latency, if the
    manager (still) reaches the storage node."""

    def __init__(self, dc: DcView, manager: str, alive: Callable[[], bool], wake: Callable[[], None]) -> None:
        self.dc, self.manager, self.alive, self.wake = dc, manager, alive, wake

    def learn(self, addresses: dict[str, str]) -> None:
        pass

    def cancel(self, effects: Sequence[Effect]) -> None:
        pass  # a pull lands or not: the token decides whether it may

    def submit(self, effects: Sequence[Effect], bwlimit: int, done: Done) -> None:
        """Kind by kind, in the batch's order, as the real port runs them: each kind
        lands LATENCY after the one before (pulls PULL_TIME more), so a seal is on
        before the final pull reads; the first failure ends the batch."""
        kinds = list(dict.fromkeys(e.kind for e in effects))
        groups = [[e for e in effects if e.kind == k] for k in kinds]
        took = sum(LATENCY + (PULL_TIME if g[0].kind == EffectKind.PULL else 0.0) for g in groups)
        state = {"delta": 0, "sizes": []}  # type: dict[str, Any]

        def run(i: int) -> None:
            failed = None
            for e in groups[i]:
                failed = self._apply(e, state)
                if failed is not None:
                    break
            if failed is None and i + 1 < len(groups):
                nxt = groups[i + 1][0].kind
                self.dc.clock.after(LATENCY + (PULL_TIME if nxt == EffectKind.PULL else 0.0), run, i + 1)
                return
            total = failed or Outcome(True, delta=state["delta"], took=took, sizes=tuple(state["sizes"]))
            if self.alive():
                done(total)
                self.wake()
        if groups:
            first = groups[0][0].kind
            self.dc.clock.after(LATENCY + (PULL_TIME if first == EffectKind.PULL else 0.0), run, 0)

    def _apply(self, e: Effect, state: dict[str, Any]) -> Outcome | None:
        """One effect on the storage node (None: done), if this manager reaches it."""
        data = self.dc.data
        if not (self.dc.net.up(self.manager, e.node) and self.dc.net.up(e.node, self.manager)):
            return Outcome(False, f"cannot connect to {e.node}")
        if e.kind == EffectKind.PULL:
            got = data.pull(e.node, e.ctid, e.source, e.token)
            state["delta"] += got.delta
            state["sizes"].extend(got.sizes)
        elif e.kind == EffectKind.SEAL:
            got = data.seal(e.node, e.ctid, e.token)
        elif e.kind == EffectKind.UNSEAL:
            got = data.unseal(e.node, e.ctid, e.token)
        else:
            got = data.remove(e.node, e.ctid)
        return None if got.ok else got
