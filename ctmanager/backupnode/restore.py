"""Restores and checks, on the storage node (its credential may read restore
points, never remove them).

borg's repository lock is not fair (a waiter with a long --lock-wait looks again only
every minute), and the daemon backs up every few seconds: a restore, check or prune
therefore holds the daemon (a `hold-<pid>` file in its state folder: no new backup
starts while that process lives) and tries with a short wait until the running
backup lets go.

A restore extracts into a staging folder beside the target first, so a failed
or interrupted extract changes nothing. In place (the CT stopped by the
manager first), the CT's folder is then swapped for the staged one with two
renames on the same filesystem; the old content is removed only after the swap.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import validate as v
from ..errors import CtmError, InputError
from ..files import write_atomic
from . import borg
from .config import BackupConfig
from .daemon import HOLD_PREFIX, Run, run_borg


class RestoreFailed(CtmError):
    exit_code = 1


@contextlib.contextmanager
def holding(cfg: BackupConfig) -> Iterator[None]:
    """While this runs, the daemon starts no backup (daemon.held_by)."""
    state = Path(cfg.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    mark = state / f"{HOLD_PREFIX}{os.getpid()}"
    write_atomic(mark, f"{os.getpid()}\n".encode(), 0o644, sync=False)
    try:
        yield
    finally:
        mark.unlink(missing_ok=True)


def run_locked(run: Run, argv: list[str], cwd: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`argv`, tried again while another borg holds the repository, RESTORE_LOCK_WAIT at most."""
    deadline = time.monotonic() + borg.RESTORE_LOCK_WAIT
    while True:
        p = run(argv, cwd, env)
        if p.returncode == borg.ERROR and borg.lock_timeout(p.stderr) and time.monotonic() < deadline:
            continue
        return p


def archives(cfg: BackupConfig, run: Run = run_borg, bypass_lock: bool = True) -> list[borg.Archive]:
    Path(cfg.state_dir).mkdir(parents=True, exist_ok=True)  # borg runs in it (a prune side's first run)
    p = run(borg.list_argv(cfg.repo, bypass_lock), cfg.state_dir, borg.env(cfg.repo, reader=True))
    if p.returncode != borg.OK:
        raise RestoreFailed(f"listing {cfg.repo.location}: {_why(p)}")
    return borg.parse_list(p.stdout)


def pick(points: list[borg.Archive], ctid: int, at: float | None, name: str | None) -> borg.Archive:
    """The restore point to use: by name, else the newest at or before `at` (None: the newest)."""
    mine = borg.points(points, ctid)
    if name is not None:
        found = [a for a in mine if a.name == name]
        if not found:
            raise InputError(f"no restore point {name!r} of CT {ctid} (ctbackup list {ctid})", where="--archive")
        return found[0]
    chosen = borg.newest_before(mine, ctid, at)
    if chosen is None:
        when = "" if at is None else f" at or before {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(at))}"
        raise InputError(f"CT {ctid} has no restore point{when} (ctbackup list {ctid})", where="--at")
    return chosen


def extract(cfg: BackupConfig, archive: borg.Archive, ctid: int, into: Path, run: Run = run_borg) -> Path:
    """The CT's files from `archive` into into/<CTID> (which must not exist yet)."""
    final = into / str(ctid)
    if os.path.lexists(final):  # a link too: the rename would fail at the end
        raise InputError(f"{final} exists: restore into an empty folder", where="--to")
    into.mkdir(parents=True, exist_ok=True)
    staging = into / f".ctbackup-restore-{ctid}-{int(time.time())}"
    staging.mkdir()
    try:
        with holding(cfg):
            p = run_locked(run, borg.extract_argv(cfg.repo, archive.name, ctid), str(staging),
                           borg.env(cfg.repo, reader=True))
        if p.returncode not in (borg.OK, borg.WARNING) or not (staging / str(ctid)).is_dir():
            raise RestoreFailed(f"extracting CT {ctid} from {archive.name}: {_why(p)}")
        (staging / str(ctid)).rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def in_place(cfg: BackupConfig, archive: borg.Archive, ctid: int, run: Run = run_borg) -> Path:
    """Replace <data>/<CTID> by its content at `archive` (the CT must be stopped)."""
    data = Path(cfg.data)
    target = data / str(ctid)
    work = data / f".ctbackup-{ctid}-{int(time.time() * 1000)}"
    restored = extract(cfg, archive, ctid, work, run)
    old = work / "before"
    if target.exists():
        target.rename(old)
    restored.rename(target)
    shutil.rmtree(work, ignore_errors=True)
    return target


def verify(cfg: BackupConfig, recorded: set[str], run: Run = run_borg) -> dict[str, Any]:
    """`borg check --verify-data` (re-reads every chunk) and the archives this node
    made that the repository no longer lists (deleted: an alarm; see catalogue.py)."""
    listed = {a.name for a in archives(cfg, run)}
    with holding(cfg):
        p = run_locked(run, borg.check_argv(cfg.repo, verify_data=True), cfg.state_dir,
                       borg.env(cfg.repo, reader=True))
    missing = sorted(recorded - listed)
    return {"checked": p.returncode == borg.OK, "check_error": "" if p.returncode == borg.OK else _why(p),
            "archives": len(listed), "missing": missing}


def prune(cfg: BackupConfig, keep_within: str, run: Run = run_borg) -> dict[str, object]:
    """Restore points older than `keep_within` (e.g. 30d) removed and their space freed:
    run with the prune key (its forced command lacks --append-only); with the storage
    node's key borg "succeeds" and frees nothing, which is the point of that key."""
    if not (v.is_digits(keep_within[:-1]) and keep_within[-1:] in ("H", "d", "w", "m", "y")
            and int(keep_within[:-1]) > 0):
        raise InputError(f"--keep-within: a count and H, d, w, m or y, like 30d (got {keep_within!r})")
    before = len(archives(cfg, run))
    for argv in (borg.prune_argv(cfg.repo, keep_within), borg.compact_argv(cfg.repo)):
        p = run_locked(run, argv, cfg.state_dir, borg.env(cfg.repo))
        if p.returncode not in (borg.OK, borg.WARNING):
            raise RestoreFailed(f"{argv[1]} of {cfg.repo.location}: {_why(p)}")
    after = len(archives(cfg, run))
    return {"archives_before": before, "archives_after": after, "keep_within": keep_within}


def _why(p: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in (p.stderr or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else f"borg exited {p.returncode}"
