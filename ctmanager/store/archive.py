"""`ctmanager store backup FILE` and `ctmanager store restore FILE`: the store's
own backups (the CTs' are borg's: backupnode/).

- SQLite: SQLite's online backup of the whole file in one read transaction (one
  committed state while managers write on) into a self-contained SQLite file,
  checked (PRAGMA quick_check). Restore copies it back the same way.
- PostgreSQL: pg_dump / pg_restore, custom format (pgarchive.py).

A backup is written as every file ctmanager writes (files.py): into a temp file
beside FILE, created exclusively and never through a link, mode 0600 (a store
holds addresses and names), synced, then renamed over FILE (an earlier backup
there is replaced whole or not at all). A backup is taken whatever the store's
schema version (before a `store migrate` is when one is wanted).

A restore goes into an empty store only, and a refusal changes nothing: no file
(or an empty one) and no -wal/-shm left from an earlier store at the path, or an
empty database. There is no --force: replacing a store under the managers that
use it is not a restore, and moving the old one aside first (mv; ALTER DATABASE
... RENAME) is one command that keeps it for a look afterwards. The restored
SQLite file is made in the store's folder and linked into place only if nothing
appeared there meanwhile; a PostgreSQL restore is one transaction.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import files
from ..errors import ConflictError, InputError, StoreError
from ..validate import is_digits
from . import pgarchive
from .backends import open_store
from .db import Locator, is_url, redact
from .sqlite import SqliteStore, backup_file, open_file_read_only
from .versions import Schema, read

BACKUP_MODE = 0o600
SQLITE_MAGIC = b"SQLite format 3\x00"
PG_MAGIC = b"PGDMP"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Done:
    store: str
    backend: str
    file: str
    bytes: int
    schema: int  # the backup's schema version
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return {"store": self.store, "backend": self.backend, "file": self.file, "bytes": self.bytes,
                "schema": self.schema, "seconds": round(self.seconds, 3)}


def size(n: int) -> str:
    return f"{n / 1048576:.1f} MiB" if n >= 1048576 else f"{n / 1024:.1f} KiB"


# ---- backup -----------------------------------------------------------------
def backup(locator: Locator, file: Path, progress: Progress = lambda _: None) -> Done:
    started = time.monotonic()
    _check_output(file, locator)
    with open_store(locator, schema_check=False) as store:  # refuses what is not a store
        where, backend = store.where, store.backend
        if isinstance(store, SqliteStore):
            progress(f"copying {where} ({size(_sqlite_size(Path(locator)))}) into {file}")
            with _output(file) as (tmp, _):
                schema, _meta = store.backup_into(tmp)
            progress("copied and checked (PRAGMA quick_check: ok)")
    if backend == "postgresql":
        schema = _dump_pg(str(locator), file, progress)
    return Done(where, backend, str(file), os.stat(file).st_size, schema, time.monotonic() - started)


def _dump_pg(url: str, file: Path, progress: Progress) -> int:
    progress(f"pg_dump of {redact(url)} into {file}")
    with _output(file) as (tmp, ident):
        fd = os.open(tmp, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_ino != ident:
                raise files.LinkRefused("was replaced before it was written; refusing to use it", where=tmp)
            pgarchive.dump(url, fd, progress)
            meta = pgarchive.archive_meta(fd, tmp)
        finally:
            os.close(fd)
        if not is_digits(meta.get("schema_version", "")):
            raise StoreError(f"{redact(url)}: pg_dump wrote an archive without the store's schema version")
    progress("archive read back (pg_restore: ok)")
    return int(meta["schema_version"])


def _sqlite_size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def _check_output(file: Path, locator: Locator) -> None:
    """FILE may be a new name or a plain file (an earlier backup); never the store."""
    try:
        st = os.lstat(file)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise InputError(f"cannot use it: {exc.strerror}", where=str(file)) from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise InputError("is a folder: give the backup's file name", where=str(file))
    if st is not None and not stat.S_ISLNK(st.st_mode) and not stat.S_ISREG(st.st_mode):
        raise InputError("is not a plain file: give the backup's file name", where=str(file))
    if not file.parent.is_dir():
        raise InputError(f"no folder {file.parent} to write the backup into", where=str(file))
    files.preflight(file)  # a link at FILE or at its temp name: refused before any work
    if st is not None and not is_url(locator):
        for part in (Path(locator), Path(f"{locator}-wal"), Path(f"{locator}-shm")):
            with contextlib.suppress(OSError):
                if os.path.samefile(file, part):
                    raise InputError("is the store itself: give another file for its backup", where=str(file))


@contextlib.contextmanager
def _output(file: Path) -> Iterator[tuple[str, int]]:
    """A temp file beside `file` (created exclusively, mode 0600), filled by the
    body through its name, then synced and renamed over `file`; removed on failure.
    A temp file swapped meanwhile (another inode, a link) is refused, not renamed.
    Yields its name and inode."""
    files.write_temp(file, b"", BACKUP_MODE)
    tmp = files.temp_name(file)
    ident = os.lstat(tmp).st_ino
    try:
        yield tmp, ident
        _seal(tmp, ident)
        files.replace_temp(file)
        _sync_folder(file)
    except BaseException:
        files.discard_temp(file)
        raise


def _seal(tmp: str, ident: int) -> None:
    fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_ino != ident or not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise files.LinkRefused("was replaced while it was written; refusing to use it", where=tmp)
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(file: Path) -> None:
    fd = os.open(file.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- restore ----------------------------------------------------------------
def restore(locator: Locator, file: Path, progress: Progress = lambda _: None) -> tuple[Done, Schema]:
    """The backup FILE into the empty store at `locator`; (what was done, the
    restored store's schema as this code sees it)."""
    started = time.monotonic()
    kind = _kind(file)
    if is_url(locator):
        if kind != "postgresql":
            raise InputError(f"an SQLite store's backup: restore it into a PostgreSQL store with: ctmanager store "
                             f"copy {file} URL (the backup must be at this ctmanager's schema)", where=str(file))
        schema = _restore_pg(str(locator), file, progress)
    else:
        if kind != "sqlite":
            raise InputError("a PostgreSQL store's backup (pg_dump): restore it into a postgresql:// store",
                             where=str(file))
        schema = _restore_sqlite(Path(locator), file, progress)
    with open_store(locator, schema_check=False) as store:
        state = read(store)
        where, backend = store.where, store.backend
    return Done(where, backend, str(file), os.stat(file).st_size, schema, time.monotonic() - started), state


def _kind(file: Path) -> str:
    try:
        with open(file, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except IsADirectoryError:
        raise InputError("is a folder: give the backup file", where=str(file)) from None
    except FileNotFoundError:
        raise InputError("no such file", where=str(file)) from None
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(PG_MAGIC):
        return "postgresql"
    raise InputError("not a store backup (neither an SQLite file nor a pg_dump archive)", where=str(file))


def _restore_sqlite(path: Path, file: Path, progress: Progress) -> int:
    _refuse_sqlite_store(path)
    source = open_file_read_only(file)
    try:
        version = int(source.execute("PRAGMA user_version").fetchone()[0])
        if version == 0 or not source.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
            raise InputError("an SQLite file, but not a ctmanager store's backup", where=str(file))
        progress(f"copying {file} ({size(file.stat().st_size)}) into {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        umask = files.current_umask()
        with _placed(path, 0o666 & ~umask, umask) as tmp:  # the mode SQLite gives a new store
            backup_file(source, tmp)
            progress("copied and checked (PRAGMA quick_check: ok)")
    finally:
        source.close()
    return version


def _refuse_sqlite_store(path: Path) -> None:
    """Only into no store: no file (or an empty one), nothing left beside it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and (not stat.S_ISREG(st.st_mode) or st.st_size > 0):
        raise ConflictError(f"holds a store ({size(st.st_size)}): a store is restored into an empty one only; move "
                            f"it aside first (mv {path} {path}.old) after stopping what uses it", where=str(path))
    for suffix in ("-wal", "-shm"):
        if os.path.lexists(f"{path}{suffix}"):
            raise ConflictError(f"{path}{suffix} is left from a store that was at {path} (a process may still "
                                f"use it): stop what uses the store, remove {path}-wal and {path}-shm, then restore",
                                where=str(path))


@contextlib.contextmanager
def _placed(path: Path, mode: int, umask: int) -> Iterator[str]:
    """Like _output, but the temp file becomes `path` only if there is still no
    store there (a link: never replaces what appeared meanwhile; an empty file may go)."""
    files.write_temp(path, b"", mode, umask)
    tmp = files.temp_name(path)
    ident = os.lstat(tmp).st_ino
    try:
        yield tmp
        _seal(tmp, ident)
        try:
            os.link(tmp, path)
        except FileExistsError:
            _refuse_sqlite_store(path)  # something with content appeared meanwhile: refused, untouched
            files.replace_temp(path)  # an empty file
        else:
            os.unlink(tmp)
        _sync_folder(path)
    except BaseException:
        files.discard_temp(path)
        raise


def _restore_pg(url: str, file: Path, progress: Progress) -> int:
    pgarchive.refuse_unless_empty(url)  # (again just before pg_restore: it may have changed meanwhile)
    fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
    try:
        meta = pgarchive.archive_meta(fd, str(file))
        if not is_digits(meta.get("schema_version", "")):
            raise InputError("a pg_dump archive, but not of a ctmanager store", where=str(file))
        progress(f"pg_restore of {file} ({size(os.fstat(fd).st_size)}) into {redact(url)}")
        pgarchive.restore(url, fd, progress)
    finally:
        os.close(fd)
    return int(meta["schema_version"])
