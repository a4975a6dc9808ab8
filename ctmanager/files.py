"""File primitives: the one safe way to write a file, content checks, stat records, diffs.

Every writer in ctmanager goes through `write_atomic` (or, for the render tree's
two phases, `write_new`/`write_temp` + `replace_temp`): a temp file created with
O_CREAT|O_EXCL|O_NOFOLLOW beside the final name, filled, fsync'd, renamed over the
final name. A link planted at the temp or final name, or at a folder below a
tree we own, is refused (LinkRefused, exit 2) and nothing is written through it:
output folders are often writable by others (a CT's /data, a shared OUT).

The render tree skips the fsync (`sync=False`): a crash loses at most the last
render, which the next render redoes (the recorded stats no longer match).
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import os
import shutil
import stat
from pathlib import Path

from .errors import InputError

Stat = tuple[int, int]  # (mtime_ns, size): enough to notice a hand edit

# Exclusive and never through a link: a name that exists (a link, another user's
# file, a hard link to one) makes the create fail instead of being opened.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class LinkRefused(InputError):
    """A link (or a file we did not make) sits where we write. Nothing was written."""


def read(path: Path | str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def check_private(path: Path | str, what: str, *, where: str | None = None, group_reads: bool = False) -> None:
    """Refuse a secret (rack HMAC key, TSIG key, SSH key, borg passphrase) that other
    users of the machine may read or change: the one check for every secret at rest.
    `group_reads`: the group may read it (only the TSIG key: named reads it as group
    bind). `where`: the config file and key that named it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # reading it says why
    if mode & (stat.S_IRWXO | stat.S_IWGRP | (0 if group_reads else stat.S_IRGRP)):
        raise InputError(f"the {what} is open to other users (mode {stat.S_IMODE(mode):04o}): chmod 600 {path}",
                         where=where)


def temp_name(path: Path | str) -> str:
    """Where a file is written before it is renamed over `path` (same folder, hidden)."""
    head, name = os.path.split(path)
    return os.path.join(head, f".{name}.tmp")


def _planted(path: Path | str, why: str) -> LinkRefused:
    return LinkRefused(f"{why}; refusing to write through it (nothing written; remove it if it is not wanted)",
                       where=str(path))


def refuse_link(path: Path | str, *, dir_fd: int | None = None) -> None:
    """Refuse a symbolic link at the final name: it was planted, or it is a mistake.
    With `dir_fd`, only the last component of `path` is looked up, in that folder."""
    try:
        st = os.stat(os.path.basename(path) if dir_fd is not None else path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise _planted(path, "is a symbolic link")


def preflight(path: Path | str) -> None:
    """Refuse now what write_atomic would refuse at `path` (a link at the final name,
    something planted at the temp name): a writer of several files checks them all
    first, so that one refused changes none."""
    refuse_link(path)
    tmp = temp_name(path)
    try:
        st = os.lstat(tmp)
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_uid == os.geteuid()):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "something we did not make"
        raise _planted(tmp, f"{kind} is at the temp name")


def _create(path: str, mode: int, *, dir_fd: int | None = None, shown: str | None = None) -> int:
    """Create `path` exclusively. A leftover temp file of ours (a plain file of our
    user with one link: an interrupted run) is removed first; anything else there
    (a link, another user's file, a hard link, a folder) is refused."""
    try:
        return os.open(path, _CREATE, mode, dir_fd=dir_fd)
    except FileExistsError:
        pass
    try:
        st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not (stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_uid == os.geteuid()):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "something we did not make"
            raise _planted(shown or path, f"{kind} is at the temp name")
        os.unlink(path, dir_fd=dir_fd)  # unlink never follows a link
    try:
        return os.open(path, _CREATE, mode, dir_fd=dir_fd)
    except FileExistsError:  # planted again meanwhile
        raise _planted(shown or path, "something is at the temp name") from None


def _fill(fd: int, data: bytes, mode: int, umask: int | None, sync: bool) -> Stat:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    if umask is None or mode & umask:  # umask must not weaken a key's or an action script's mode
        os.fchmod(fd, mode)
    if sync:
        os.fsync(fd)
    st = os.fstat(fd)
    return (st.st_mtime_ns, st.st_size)


def open_dir(path: Path | str, *, under: Path | str | None = None, create: bool = False, mode: int = 0o755) -> int:
    """A descriptor of folder `path`. With `under`, every folder below `under` must be
    a real folder, never a link (made if `create`): what we write below a tree we
    own (a CT's /data, an output tree) must not be sent elsewhere by a planted link."""
    if under is None:
        return os.open(path, _DIR)
    rel = os.path.relpath(path, under)
    if rel == os.curdir:
        return os.open(under, _DIR)
    if rel.startswith(os.pardir):
        raise InputError(f"{path} is not inside {under}")
    fd = os.open(under, _DIR)
    at = Path(under)
    try:
        for part in Path(rel).parts:
            at = at / part
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, mode, dir_fd=fd)
            try:
                nxt = os.open(part, _DIR | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and os.path.islink(at)):
                    raise _planted(at, "is a symbolic link") from None
                if exc.errno == errno.ENOTDIR:
                    raise InputError("exists and is not a folder", where=str(at)) from None
                raise
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_dirs(path: Path | str, *, under: Path | str, mode: int = 0o755) -> Path:
    """mkdir -p of `path` below `under`, refusing a link at any folder in between."""
    os.close(open_dir(path, under=under, create=True, mode=mode))
    return Path(path)


def write_atomic(path: Path | str, data: bytes, mode: int, *, umask: int | None = None, sync: bool = True,
                 sync_folder: bool = False, under: Path | str | None = None, make_parents: bool = False) -> Stat:
    """THE way to write a file: readers see the old or the new file, never half of one,
    and nothing is written through a link. Temp file (exclusive, no link followed),
    fsync (`sync`), rename over the final name, then fsync the folder (`sync_folder`:
    the rename itself survives a crash). With `under`, the folders from `under` down
    are checked (made with `make_parents`) to be real folders; the operations use the
    folder's descriptor, so none can be swapped for a link meanwhile."""
    head, name = os.path.split(os.fspath(path))
    if under is not None:
        dfd = open_dir(head or os.curdir, under=under, create=make_parents)
    else:
        if make_parents:
            os.makedirs(head or os.curdir, exist_ok=True)
        dfd = os.open(head or os.curdir, _DIR)
    try:
        refuse_link(path, dir_fd=dfd)
        tmp = f".{name}.tmp"
        fd = _create(tmp, mode, dir_fd=dfd, shown=os.path.join(head, tmp))
        try:
            try:
                st = _fill(fd, data, mode, umask, sync)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        if sync_folder:
            os.fsync(dfd)
    finally:
        os.close(dfd)
    return st


def write_new(path: Path | str, data: bytes, mode: int, umask: int | None = None) -> Stat:
    """Create `path`, which must not exist: for folders we have just made (a staged rack)."""
    try:
        fd = os.open(path, _CREATE, mode)
    except FileExistsError:
        raise _planted(path, "something is already there") from None
    try:
        return _fill(fd, data, mode, umask, sync=False)
    finally:
        os.close(fd)


def write_temp(path: Path | str, data: bytes, mode: int, umask: int | None = None, *, sync: bool = False) -> Stat:
    """First half of write_atomic, for a writer that renames later (all files at once):
    `path`'s temp name holds `data`. Refuses a link at the final or the temp name."""
    refuse_link(path)
    tmp = temp_name(path)
    fd = _create(tmp, mode)
    try:
        return _fill(fd, data, mode, umask, sync)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)


def replace_temp(path: Path | str) -> None:
    """Second half: rename `path`'s temp file over it (a link planted since is refused;
    rename would replace the link, never write through it, either way)."""
    refuse_link(path)
    os.replace(temp_name(path), path)


def discard_temp(path: Path | str) -> None:
    """Remove `path`'s temp file if it is a plain file (ours); a planted link stays."""
    tmp = temp_name(path)
    with contextlib.suppress(OSError):
        if stat.S_ISREG(os.lstat(tmp).st_mode):
            os.unlink(tmp)


def make_stage(path: Path | str, mode: int = 0o755) -> None:
    """A fresh staging folder (`.rack-N.new`): made with an exclusive mkdir. One left
    by an interrupted run (a real folder) is removed first; a link is refused."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):
            raise _planted(path, "a symbolic link or file is at the staging name")
        shutil.rmtree(path)  # it does not follow links inside the tree
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        raise _planted(path, "something was put at the staging name meanwhile") from None


def append(path: Path | str, data: bytes, mode: int = 0o644) -> None:
    """Append to a log (created if missing) and fsync it; never through a link."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _planted(path, "is a symbolic link") from None
        raise
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def open_lock(path: Path | str) -> int:
    """A lock file's descriptor (for flock): created if missing, never truncated, never a link."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _planted(path, "is a symbolic link") from None
        raise


def same_content(path: Path | str, data: bytes, mode: int) -> Stat | None:
    """The file's stat if it already holds exactly `data` with `mode`, else None.
    A link is never the same (its writer then refuses it)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISREG(st.st_mode) and st.st_size == len(data) and (st.st_mode & 0o777) == mode and read(path) == data:
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
