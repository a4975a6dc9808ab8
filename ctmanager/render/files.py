"""File primitives for rendered trees: atomic write-if-changed, stat records, diffs."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

Stat = tuple[int, int]  # (mtime_ns, size): enough to notice a hand edit


def read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def write_atomic(path: Path, data: bytes, mode: int) -> Stat:
    """Write via temp file + rename, so readers see the old or the new file, never half.

    No fsync per file: a crash loses at most the last render, which the next
    render (the manifest no longer matches) redoes.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)  # umask must not weaken an executable action script
        st = os.fstat(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return (st.st_mtime_ns, st.st_size)


def write_if_changed(path: Path, data: bytes, mode: int) -> tuple[bool, Stat]:
    """Returns (written, stat). An identical file is left alone (mtime kept)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return True, write_atomic(path, data, mode)
    if st.st_size == len(data) and (st.st_mode & 0o777) == mode and path.read_bytes() == data:
        return False, (st.st_mtime_ns, st.st_size)
    return True, write_atomic(path, data, mode)


def stat_matches(path: Path, recorded: Stat) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return (st.st_mtime_ns, st.st_size) == tuple(recorded)


def unified(rel: str, old: bytes | None, new: bytes | None) -> str:
    a = (old or b"").decode("utf-8", "replace").splitlines(keepends=True)
    b = (new or b"").decode("utf-8", "replace").splitlines(keepends=True)
    return "".join(
        difflib.unified_diff(a, b, "/dev/null" if old is None else f"a/{rel}", "/dev/null" if new is None else f"b/{rel}")
    )
