"""A tenant move as a pure state machine: `advance(move, facts)` says what to
write and which storage effects to hand out next. The destination rack's leading
manager steps it from its own loop (manager/workflows.py), as it steps plan(); the
simulator runs that loop among faults. No clock, no thread, no store here.

    copy      pull each CT's /data to the destination's storage node while the
              tenant runs, until a pass moves little (or max_passes)
    cutover   seal:  hold the tenant down where it is configured and, as the hold
                     begins, seal the leaving side's /data on its storage node
                     (ctagent refuses to start a CT on it; the CTs still running
                     write on until their stop)
              stop:  wait for that rack's leader to certify it let every CT go
                     (reconcile/release.py)
              final: the last pull, carrying a fencing token (the move and the
                     runner's epoch)
              (flip): the CT rows go to the other rack, in one transaction
              start: wait until every CT is UP there and its names resolve
    online    the downtime is recorded; then delete (or rest, with --keep-source)
    delete    remove the source copies -> done
    rollback  before the flip: unseal, release the hold, wait until UP at the
              source, remove the partial copies -> rolled-back. After the flip the
              way back is a cutover the other way: hold at the destination, its
              leader's certificate (sealed meanwhile), copy the destination's /data back (what
              the tenant wrote there is kept), unseal the source, flip back, start.

Every safety rule is an acknowledgement or a token: a certificate of the leaving
rack's leader, a seal, an epoch. Timers (stop_timeout, start_timeout) only decide
when to give up and roll back, never that something is down.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..dc.model import rack_name


class Phase(StrEnum):
    COPY = "copy"
    CUTOVER = "cutover"
    ONLINE = "online"
    DELETE = "delete"
    DONE = "done"
    ROLLBACK = "rollback"
    ROLLED_BACK = "rolled-back"


class Step(StrEnum):
    NONE = ""
    STOP = "stop"
    SEAL = "seal"
    FINAL = "final"  # (rows of an earlier version: the final pull alone)
    UNSEAL = "unseal"
    START = "start"
    CLEANUP = "cleanup"


EPOCH_BITS = 32  # lease epochs are seconds of the store's clock (or the last + 1): below 2**32 until 2106


def fencing_token(move_id: int, epoch: int) -> int:
    """The token a move's storage writes (pulls, seals, unseals) carry, checked by
    the storage node per CT: a later move of the CT outranks every earlier one
    (move ids only grow), and within a move a newer leader of the runner's rack
    outranks an older one (its epochs only grow). Epochs of different racks, which
    say nothing of each other, are never compared."""
    return (move_id << EPOCH_BITS) | min(max(epoch, 0), (1 << EPOCH_BITS) - 1)


OPEN = (Phase.COPY, Phase.CUTOVER, Phase.ONLINE, Phase.DELETE, Phase.ROLLBACK)
PHASES = tuple(p.value for p in Phase)


@dataclass(frozen=True)
class MoveCt:
    ctid: int
    hostname: str
    src_ip: str
    dst_ip: str  # '' until the cutover gives it one
    src_storage: str
    dst_storage: str
    bytes: int = 0  # of its /data at the last pass
    files: int = 0


@dataclass(frozen=True)
class Move:
    id: int
    tenant: str
    src: int
    dst: int
    phase: str
    step: str
    hold: bool
    flipped: bool
    precopy: bool
    keep_source: bool
    aborting: bool
    bwlimit: int  # bytes/s, 0 = none
    routes: dict[str, tuple[str, str]]  # service -> (target at the source, target at the destination)
    passes: int
    bytes: int  # copied in all passes
    last_delta: int  # copied by the last pass
    created_at: float
    updated_at: float
    deadline: float | None
    held_at: float | None  # when the hold began (a cutover's stop, or a rollback's after the flip)
    stopped_at: float | None
    online_at: float | None
    finished_at: float | None
    downtime: float | None
    error: str
    log: tuple[str, ...]
    cts: tuple[MoveCt, ...] = ()
    hold_version: int = 0  # the configuration version from which the hold is visible
    token: int = 0  # the fencing token of its last storage write (fencing_token: the move and the runner's epoch)
    sealed: bool = False  # the leaving side's /data is sealed

    @property
    def open(self) -> bool:
        return self.finished_at is None

    @property
    def rack(self) -> int:
        """Where the tenant's CTs are configured now."""
        return self.dst if self.flipped else self.src

    @property
    def other(self) -> int:
        return self.src if self.flipped else self.dst

    def side(self, rack: int) -> tuple[tuple[str, int], ...]:
        """(storage node, CTID) of each CT's /data on rack `rack`'s side."""
        return tuple((c.src_storage if rack == self.src else c.dst_storage, c.ctid) for c in self.cts)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "tenant": self.tenant, "from": rack_name(self.src), "to": rack_name(self.dst),
                "phase": self.phase, "step": self.step, "held": self.hold, "in": rack_name(self.rack),
                "precopy": self.precopy, "keep_source": self.keep_source, "abort_requested": self.aborting,
                "bwlimit": self.bwlimit, "passes": self.passes, "bytes_copied": self.bytes,
                "last_delta": self.last_delta, "created_at": self.created_at, "stopped_at": self.stopped_at,
                "online_at": self.online_at, "finished_at": self.finished_at, "downtime": self.downtime,
                "error": self.error, "sealed": self.sealed, "token": self.token,
                "routes": {s: list(t) for s, t in self.routes.items()},
                "cts": [{"ctid": c.ctid, "hostname": c.hostname, "from_ip": c.src_ip, "to_ip": c.dst_ip or None,
                         "from_storage": c.src_storage, "to_storage": c.dst_storage, "bytes": c.bytes,
                         "files": c.files} for c in self.cts],
                "log": list(self.log)}


# ---- what the runner tells the machine, and what it asks of the runner ------------
class EffectKind(StrEnum):
    PULL = "pull"  # node: where to; source: the storage node read from
    SEAL = "seal"
    UNSEAL = "unseal"
    REMOVE = "remove"


@dataclass(frozen=True)
class Effect:
    kind: EffectKind
    node: str
    ctid: int
    source: str = ""  # a pull's source storage node
    token: int = 0  # the fencing token the storage node checks (pulls, seals)
    check_space: bool = False  # a first pull: refuse when the node lacks room for the tenant


@dataclass(frozen=True)
class Outcome:
    """What one batch of effects did (all of one step's effects, together)."""

    ok: bool
    error: str = ""
    stale: bool = False  # a storage node has seen a newer token: another runner leads
    delta: int = 0  # bytes a batch of pulls brought over
    took: float = 0.0
    sizes: tuple[tuple[int, int, int], ...] = ()  # (CTID, bytes, files) after the pulls


@dataclass(frozen=True)
class Release:
    """A rack leader's certificate for a held move (reconcile/release.py)."""

    rack: int
    epoch: int
    version: int  # the configuration version it acted on
    released: bool
    detail: str


@dataclass(frozen=True)
class Facts:
    now: float  # the store's clock
    epoch: int  # the runner's lease epoch (its storage writes carry fencing_token(move, epoch))
    release: Release | None = None  # move.rack's leader's certificate for this move
    online: str = "?"  # '' when every CT is UP in move.rack and resolvable; else why not
    refused: str = ""  # why the tenant cannot start in move.rack at all
    outcome: Outcome | None = None  # of the effects handed out for this step (None: none yet)
    bwlimit: int = 1 << 20  # bytes/s of a pass that counts as small (about a second of copying)
    max_passes: int = 5
    stop_timeout: float = 60.0
    start_timeout: float = 120.0


@dataclass(frozen=True)
class Advance:
    changes: Mapping[str, Any] = field(default_factory=dict)  # move fields to write
    say: str = ""
    effects: tuple[Effect, ...] = ()  # to hand out; their Outcome comes back in the next Facts
    flip: bool | None = None  # True: configure the CTs in the destination, False: back at the source
    config: bool = False  # the write changes the configuration (a hold, a flip)
    sizes: tuple[tuple[int, int, int], ...] = ()

    @property
    def idle(self) -> bool:
        return not (self.changes or self.effects or self.flip is not None or self.say)


WAIT = Advance()
