"""The storage node's own record of its restore points: one JSON line per archive
made (points.jsonl in the state folder, appended and flushed after each one), the
newest per CT kept in memory. It answers `ctbackup status` without asking the
repository, and is what the backup side's listing is compared with: an archive
recorded here but gone there was deleted (append-only borg lets a client "delete"
an archive and keeps the data; see FIELD-NOTES), which is an alarm.

A CT's state against the RPO: OK (newest point at most RPO old), LATE (older),
NEVER (none yet); ALARM when older than 2 x RPO.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..files import append, write_atomic
from . import borg

COMPACT_OVER = 8 << 20  # bytes: at start, a larger log is rewritten with each CT's newest point only


@dataclass(frozen=True)
class Point:
    archive: str
    at: float             # the cycle's start: the data is as of then
    ctids: tuple[int, ...]
    files: int = 0
    original: int = 0
    new: int = 0
    repository: int = 0   # the repository's size after this archive (borg's unique_csize)


@dataclass(frozen=True)
class CtState:
    ctid: int
    state: str            # OK | LATE | NEVER
    alarm: bool
    newest: str | None    # archive name
    at: float | None
    age: float | None


def _parse(line: str) -> Point | None:
    try:
        d = json.loads(line)
        if borg.parse_name(str(d["archive"])) is None:
            return None
        return Point(str(d["archive"]), float(d["at"]),
                     tuple(int(c) for c in d["ctids"]), int(d.get("files", 0)), int(d.get("original", 0)),
                     int(d.get("new", 0)), int(d.get("repository", 0)))
    except (ValueError, KeyError, TypeError):
        return None  # a torn last line (power cut mid-append): the archive is in the repository anyway


class Catalogue:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "points.jsonl"
        self.newest: dict[int, Point] = {}
        self.last: Point | None = None   # the newest archive of all: the repository's size as of then
        self.count = 0
        state_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            for line in self.path.read_text(errors="replace").splitlines():
                p = _parse(line)
                if p is not None:
                    self._remember(p)
            if self.path.stat().st_size > COMPACT_OVER:
                self._compact()

    def _remember(self, p: Point) -> None:
        self.count += 1
        if self.last is None or self.last.at <= p.at:
            self.last = p
        for c in p.ctids:
            if c not in self.newest or self.newest[c].at <= p.at:
                self.newest[c] = p

    def record(self, p: Point) -> None:
        line = json.dumps({**asdict(p), "ctids": list(p.ctids)}, separators=(",", ":")) + "\n"
        append(self.path, line.encode())
        self._remember(p)

    def _compact(self) -> None:
        keep = {p.archive: p for p in self.newest.values()}
        write_atomic(self.path, "".join(json.dumps({**asdict(p), "ctids": list(p.ctids)}, separators=(",", ":")) + "\n"
                                        for p in sorted(keep.values(), key=lambda p: p.at)).encode(), 0o644)

    def recorded(self) -> set[str]:
        """Every archive name in the log (since its last compaction: the newest per CT before it)."""
        return set(self.points())

    def points(self) -> dict[str, Point]:
        """Every point in the log by archive name (what each one read and added)."""
        if not self.path.exists():
            return {}
        return {p.archive: p for p in map(_parse, self.path.read_text(errors="replace").splitlines()) if p}

    def states(self, ctids: list[int], now: float, rpo: float) -> list[CtState]:
        out = []
        for c in sorted(ctids):
            p = self.newest.get(c)
            if p is None:
                out.append(CtState(c, "NEVER", True, None, None, None))
                continue
            age = max(0.0, now - p.at)
            out.append(CtState(c, "OK" if age <= rpo else "LATE", age > 2 * rpo, p.archive, p.at, round(age, 1)))
        return out
