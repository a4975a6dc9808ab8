"""Which CTs changed: inotify over the storage node's data folder (recursive, new
folders watched as they appear), and the dirty set the backup cycles take from.

Events only say "something under <data>/<CTID> changed"; what changed is borg's
files cache's business. When the kernel's event queue overflows (IN_Q_OVERFLOW)
or a watch cannot be added (the inotify watch limit), events were lost: every
CT is dirty, and the next cycle backs them all up (cheap where nothing changed).
The daemon also scans at start and hourly (scan.py) for what events miss.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import validate as v
from ..errors import CtmError

SETTLE = 2.0      # s without events before a changed CT is backed up (a burst becomes one restore point)
MAX_WAIT = 20.0   # s after its first change a CT is backed up even while writes go on
HOOK_DIR, REQUEST, READY = ".ctbackup", "request", "ready"  # a CT's pre-backup handshake (hook.py)


def ctid_of(path: str, root: str) -> int | None:
    """The CT a path under `root` belongs to (root/<CTID>/...), else None."""
    base = root.rstrip("/") + "/"
    if not path.startswith(base):
        return None
    first = path[len(base):].split("/", 1)[0]
    return int(first) if v.is_digits(first) and len(first) <= 9 else None


def _handshake(path: str, root: str) -> bool:
    """The pre-backup hook's request and answer (hook.py) are no change of the CT's data."""
    rest = path[len(root.rstrip("/")) + 1:].split("/")
    return len(rest) >= 3 and rest[1] == HOOK_DIR and rest[2] in (REQUEST, READY)


@dataclass
class _Change:
    first: float
    last: float


class Dirty:
    """CTs changed since their last backup began. Times are arguments (the daemon's
    clock), so the policy is tested without waiting."""

    def __init__(self, settle: float = SETTLE, max_wait: float = MAX_WAIT) -> None:
        self.settle, self.max_wait = settle, max_wait
        self._lock = threading.Lock()
        self._changes: dict[int, _Change] = {}
        self.overflows = 0

    def mark(self, ctid: int, now: float) -> None:
        with self._lock:
            c = self._changes.get(ctid)
            if c is None:
                self._changes[ctid] = _Change(now, now)
            else:
                c.last = now

    def mark_all(self, ctids: Iterable[int], now: float) -> None:
        """Events were lost: every CT counts as changed (and ready at once)."""
        with self._lock:
            self.overflows += 1
        self.ready(ctids, now)

    def ready(self, ctids: Iterable[int], now: float) -> None:
        """These changed (a scan says so): due at once."""
        with self._lock:
            for ctid in ctids:
                self._changes[ctid] = _Change(now - self.max_wait, now - self.settle)

    def take(self, now: float) -> list[int]:
        """The CTs due for a backup now (quiet for `settle`, or changing for
        `max_wait`), removed from the set: a change from here on marks them again."""
        with self._lock:
            due = sorted(c for c, ch in self._changes.items()
                         if now - ch.last >= self.settle or now - ch.first >= self.max_wait)
            for c in due:
                del self._changes[c]
            return due

    def put_back(self, ctids: Iterable[int], now: float) -> None:
        """A backup of these failed or waited: dirty again, due at once (a change
        marked meanwhile keeps its own times)."""
        with self._lock:
            for ctid in ctids:
                self._changes.setdefault(ctid, _Change(now - self.max_wait, now - self.settle))

    def pending(self) -> list[int]:
        with self._lock:
            return sorted(self._changes)


class Watcher:
    """pyinotify on `root`, recursively; calls `changed(ctid)` per event and
    `lost()` when events were lost. Runs its own thread (pyinotify's notifier)."""

    MASK_NAMES = ("IN_MODIFY", "IN_ATTRIB", "IN_CLOSE_WRITE", "IN_MOVED_FROM", "IN_MOVED_TO", "IN_CREATE",
                  "IN_DELETE", "IN_DELETE_SELF", "IN_Q_OVERFLOW")

    def __init__(self, root: Path, changed: Callable[[int], None], lost: Callable[[], None]) -> None:
        try:
            import pyinotify
        except ImportError:
            raise CtmError("pyinotify is not installed (pip install ctmanager)") from None
        self.root, self.changed, self.lost = str(root), changed, lost
        mask = 0
        for name in self.MASK_NAMES:
            mask |= getattr(pyinotify, name)
        self._mask = mask
        self._wm = pyinotify.WatchManager()
        self._notifier = pyinotify.ThreadedNotifier(self._wm, self._event)
        self._notifier.daemon = True
        self._pyinotify = pyinotify
        logging.getLogger("pyinotify").addFilter(self._filter)
        added = self._wm.add_watch(self.root, mask, rec=True, auto_add=True, quiet=True)
        if any(wd < 0 for wd in added.values()):  # e.g. fs.inotify.max_user_watches reached
            self.lost()

    def _filter(self, record: logging.LogRecord) -> bool:
        """pyinotify logs the watches it could not add on its own (auto_add): a folder
        gone before it was watched (ENOENT) is nothing; any other (ENOSPC: the watch
        limit) means changes there go unseen: events are lost."""
        text = record.getMessage()
        if "add_watch" in text and "ENOENT" in text:
            return False
        if "add_watch" in text:
            self.lost()
        return True

    def start(self) -> None:
        self._notifier.start()

    def stop(self) -> None:
        self._notifier.stop()
        logging.getLogger("pyinotify").removeFilter(self._filter)

    def _event(self, event: Any) -> None:
        if event.mask & self._pyinotify.IN_Q_OVERFLOW:
            self.lost()
            return
        if event.mask & self._pyinotify.IN_MOVED_TO and event.dir:
            # auto_add follows folders made here, not folders moved in (an in-place
            # restore swaps a CT's whole folder in): watch the tree that arrived
            added = self._wm.add_watch(event.pathname, self._mask, rec=True, auto_add=True, quiet=True)
            if any(wd < 0 for wd in added.values()):
                self.lost()
        ctid = ctid_of(event.pathname, self.root)
        if ctid is not None and not _handshake(event.pathname, self.root):
            self.changed(ctid)
