"""File primitives for rendered trees: atomic writes, content checks, stat records, diffs.

No fsync per file: a crash loses at most the last render, which the next render
redoes (the recorded stats no longer match).
"""

from __future__ import annotations

import difflib
import os
import stat
from pathlib import Path

from .errors import InputError

Stat = tuple[int, int]  # (mtime_ns, size): enough to notice a hand edit


def read(path: Path | str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def check_private(path: Path | str, what: str) -> None:
    """Refuse a secret (HMAC key, TSIG key) that every user of the machine may read
    or change. The group may read it (named reads the TSIG key as group bind)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # reading it says why
    if mode & (stat.S_IRWXO | stat.S_IWGRP):
        raise InputError(f"the {what} is open to other users (mode {stat.S_IMODE(mode):04o}): chmod 600 {path}")


def temp_name(path: Path | str) -> str:
    """Where a file is written before it is renamed over `path` (same folder, hidden)."""
    head, name = os.path.split(path)
    return os.path.join(head, f".{name}.tmp")


def write_new(path: Path | str, data: bytes, mode: int, umask: int | None = None, *, exclusive: bool = False) -> Stat:
    """Write `path` in place. Only for files nobody reads yet: temp files and staged folders.

    `umask`, when known, saves a chmod per file in the common case where it
    does not take bits away from `mode`.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC), mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if umask is None or mode & umask:  # umask must not weaken an executable action script
            os.fchmod(fd, mode)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return (st.st_mtime_ns, st.st_size)


def write_atomic(path: Path | str, data: bytes, mode: int) -> Stat:
    """Temp file + rename: readers see the old or the new file, never half of one."""
    tmp = temp_name(path)
    st = write_new(tmp, data, mode)
    os.replace(tmp, path)
    return st


def same_content(path: Path | str, data: bytes, mode: int) -> Stat | None:
    """The file's stat if it already holds exactly `data` with `mode`, else None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if st.st_size == len(data) and (st.st_mode & 0o777) == mode and read(path) == data:
        return (st.st_mtime_ns, st.st_size)
    return None


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def unified(rel: str, old: bytes | None, new: bytes | None) -> str:
    a = (old or b"").decode("utf-8", "replace").splitlines(keepends=True)
    b = (new or b"").decode("utf-8", "replace").splitlines(keepends=True)
    return "".join(
        difflib.unified_diff(a, b, "/dev/null" if old is None else f"a/{rel}", "/dev/null" if new is None else f"b/{rel}")
    )
