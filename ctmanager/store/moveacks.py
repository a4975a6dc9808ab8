"""The rows a tenant move's acknowledgements live in: each rack leader's
certificate that it let a held tenant go (`move_acks`, reconcile/release.py
decides it), and the journal rows that certificate is decided from."""

from __future__ import annotations

from collections.abc import Iterable

from ..reconcile.moving import Move, Release
from ..reconcile.release import Intent
from ..reconcile.state import JournalState
from . import moves
from .db import Store


def held_in(store: Store, rack: int) -> list[Move]:
    """Open moves holding a tenant whose CTs are configured in `rack` now: its
    leader certifies each one (manager/moves.py)."""
    rows = store.query("SELECT id FROM moves WHERE hold = 1 AND finished_at IS NULL AND "
                       "((flipped = 0 AND src = ?) OR (flipped = 1 AND dst = ?)) ORDER BY id", (rack, rack))
    return [moves.get(store, int(r[0])) for r in rows]


def intents(store: Store, ctids: Iterable[int], rack: int) -> list[Intent]:
    """Rack `rack`'s journal rows about these CTs, oldest first."""
    ids = sorted(set(ctids))
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    rows = store.query(f"SELECT id, kind, ct_id, hn, state, epoch, at, finished_at FROM journal "  # noqa: S608
                       f"WHERE rack = ? AND ct_id IN ({marks}) ORDER BY id", (rack, *ids))
    return [Intent(int(r[0]), str(r[1]), int(r[2]), str(r[3]), JournalState(r[4]), int(r[5]), float(r[6]),
                   None if r[7] is None else float(r[7])) for r in rows]


def release_of(store: Store, move_id: int, rack: int) -> Release | None:
    row = store.one("SELECT epoch, version, released, detail FROM move_acks WHERE move = ? AND rack = ?",
                    (move_id, rack))
    if row is None:
        return None
    return Release(rack, int(row[0]), int(row[1]), bool(row[2]), str(row[3]))


def certify(store: Store, move: Move, rack: int, epoch: int, version: int, released: bool, detail: str,
            now: float) -> bool:
    """Write rack `rack`'s certificate for `move` (the caller's transaction),
    check-then-act: only while the move is open, holds its tenant, and its CTs
    are configured in `rack`. A release, once written, is never taken back: no
    start of a held CT can be journaled, so it stays true. Returns whether written."""
    row = store.one("SELECT hold, flipped, src, dst FROM moves WHERE id = ? AND finished_at IS NULL", (move.id,))
    if row is None or not row[0] or (int(row[3]) if row[1] else int(row[2])) != rack:
        return False
    old = release_of(store, move.id, rack)
    if old is not None and old.released:
        return False
    store.execute("INSERT INTO move_acks (move, rack, epoch, version, released, detail, at) VALUES (?, ?, ?, ?, ?, "
                  "?, ?) ON CONFLICT(move, rack) DO UPDATE SET epoch = excluded.epoch, version = excluded.version, "
                  "released = excluded.released, detail = excluded.detail, at = excluded.at",
                  (move.id, rack, epoch, version, int(released), detail, now))
    return True


def forget(store: Store, move_id: int, rack: int) -> None:
    """A new hold in `rack` (a rollback's): an earlier certificate of it says nothing of this one."""
    store.execute("DELETE FROM move_acks WHERE move = ? AND rack = ?", (move_id, rack))
