"""The inventory scan: what inotify missed (events lost while the daemon was down,
an overflowed queue, a watch limit). At start and hourly, every CT folder is
walked and compared with the start of its newest restore point: anything whose
ctime or mtime is at or after it changed since (a deletion changes its folder's).
The walk stops at the first such entry, so a CT that changed costs little; an
unchanged one costs one lstat per entry, which is the price of being sure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from .. import validate as v

SLACK_NS = 10_000_000  # 10 ms: file times come from the kernel's coarse clock (a tick, ~4 ms)


def ct_folders(data: Path) -> Iterator[tuple[int, Path]]:
    """(CTID, folder) of every CT folder under the data folder."""
    try:
        entries = sorted(os.scandir(data), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for e in entries:
        if v.is_digits(e.name) and len(e.name) <= 9 and e.is_dir(follow_symlinks=False):
            yield int(e.name), Path(e.path)


def changed_since(folder: Path, since_ns: int, each: Callable[[], object] = lambda: None) -> bool:
    """Whether anything under `folder` (itself included) changed at or after `since_ns`.
    `each` is called before each folder's listing (the daemon's keep-alive: a CT of
    millions of files is a long walk, and progress all the way)."""
    limit = since_ns - SLACK_NS
    stack = [str(folder)]
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        return False
    if max(st.st_ctime_ns, st.st_mtime_ns) >= limit:
        return True
    while stack:
        each()
        try:
            it = os.scandir(stack.pop())
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue  # gone meanwhile, or unreadable: borg reports the latter itself
        with it:
            for e in it:
                try:
                    s = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    return True  # removed while we looked: it changed
                if max(s.st_ctime_ns, s.st_mtime_ns) >= limit:
                    return True
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
    return False


def due(data: Path, backed_up_at_ns: dict[int, int], each: Callable[[], object] = lambda: None) -> list[int]:
    """CTs with no restore point yet, or changed since their newest one began. `each`:
    see changed_since."""
    found = []
    for ctid, folder in ct_folders(data):
        each()
        if ctid not in backed_up_at_ns or changed_since(folder, backed_up_at_ns[ctid], each):
            found.append(ctid)
    return found
