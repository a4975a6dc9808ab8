"""Crash-loop detection: how often each CT crashed lately.

A CT whose init dies is restarted (plan: "crashed: OPST DOWN while ADMST UP").
One that dies again and again would be restarted forever, each restart a new
crash of whatever broke it; after `limit` crashes within `window` seconds the
manager leaves it down instead (manager/core.py) until ops clear it. Pure: the
time is an argument.
"""

from __future__ import annotations

from collections import deque


class CrashCounter:
    """Crash restarts per CTID within a sliding window. `limit` 0 counts nothing."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._at: dict[int, deque[float]] = {}  # CTID -> times of its crashes within the window, oldest first

    def record(self, ctid: int, now: float) -> int:
        """A crash of `ctid` at `now`. Returns its crashes within the window, this one included."""
        if self.limit <= 0:
            return 0
        times = self._at.setdefault(ctid, deque())
        times.append(now)
        self._drop_old(times, now)
        return len(times)

    def reached(self, ctid: int, now: float) -> bool:
        """Has `ctid` crashed `limit` times within the window up to `now`?"""
        return self.limit > 0 and self.count(ctid, now) >= self.limit

    def count(self, ctid: int, now: float) -> int:
        times = self._at.get(ctid)
        if times is None:
            return 0
        self._drop_old(times, now)
        return len(times)

    def forget(self, ctid: int) -> None:
        """Ops cleared the CT (`ct reset`): it starts with a clean slate."""
        self._at.pop(ctid, None)

    def prune(self, now: float) -> None:
        """Forget crashes older than the window (so memory stays bounded by recent crashes)."""
        for ctid in list(self._at):
            if not self.count(ctid, now):
                del self._at[ctid]

    def _drop_old(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()
