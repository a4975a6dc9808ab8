"""Each CT's newest restore point as its rack's leader last read it from the
storage node (manager/backups.py): what `status` shows against the RPO, and the
age the alarm is judged by, even while the storage node cannot be asked."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .db import Store


@dataclass(frozen=True)
class Known:
    ctid: int
    node: str
    rpo: float
    newest: str | None
    newest_at: float | None
    checked_at: float

    def state(self, now: float) -> tuple[str, float | None]:
        """(OK | LATE | ALARM | NEVER, the newest point's age): ALARM past 2 x RPO."""
        if self.newest_at is None:
            return "NEVER", None
        age = max(0.0, now - self.newest_at)
        return ("OK" if age <= self.rpo else "LATE" if age <= 2 * self.rpo else "ALARM"), age


def record(store: Store, node: str, rpo: float, points: Iterable[tuple[int, str | None, float | None]],
           now: float) -> None:
    """What storage node `node` said of its CTs: (CTID, newest archive, its time)."""
    store.executemany(
        "INSERT INTO backup_points (ct_id, node, rpo, newest, newest_at, checked_at) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(ct_id) DO UPDATE SET node = excluded.node, rpo = excluded.rpo, newest = excluded.newest, "
        "newest_at = excluded.newest_at, checked_at = excluded.checked_at",
        [(ctid, node, rpo, newest, at, now) for ctid, newest, at in points])


def known(store: Store, rack: int | None = None) -> dict[int, Known]:
    rows = store.query("SELECT b.ct_id, b.node, b.rpo, b.newest, b.newest_at, b.checked_at FROM backup_points b "
                       "JOIN cts c ON c.ct_id = b.ct_id WHERE c.rack = ? OR ? = 1",
                       (rack or 0, 1 if rack is None else 0))
    return {int(r[0]): Known(int(r[0]), str(r[1]), float(r[2]), r[3], None if r[4] is None else float(r[4]),
                             float(r[5])) for r in rows}

