"""What the agent daemon and `ctagent apply` (a separate process per action)
share on one HN: the specs of its CTs, the fence state the daemon writes each
round and `apply` reads before starting anything, the drain flag, the newest
manager epoch seen here (a deposed leader's actions are refused), and one lock
per CT. `DiskNode` keeps them under `state_dir`; the simulator has its own
in memory (the same protocol), so it runs the real `apply` and the real daemon.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from ..errors import InputError
from ..files import open_lock, same_content, write_atomic
from ..validate import is_digits
from ..wire import spec as specs
from .config import AgentConfig


class SpecBook(Protocol):
    """`all()` and `hashes()` return the very same dict while nothing changed
    (the agent builds its report's CT list again only when one of them is new).
    Treat them as read-only."""

    def get(self, ctid: int) -> specs.Spec | None: ...
    def put(self, ctid: int, raw: bytes) -> None: ...
    def drop(self, ctid: int) -> None: ...
    def all(self) -> dict[int, specs.Spec]: ...
    def hashes(self) -> dict[int, str]: ...


class Node(Protocol):
    @property
    def specs(self) -> SpecBook: ...
    def fence_state(self) -> tuple[bool | None, float | None]:
        """What the daemon last wrote: (fenced, when); (None, None) if it never ran."""
    def write_fence(self, fenced: bool, at: float) -> None: ...
    def drained(self) -> bool: ...
    def lock(self, ctid: int) -> AbstractContextManager[None]: ...
    def see_epoch(self, epoch: int) -> int:
        """Record that a manager of `epoch` spoke (the newest one is kept, across
        restarts); returns the newest epoch seen before this one."""
    def sealed(self, marker: str) -> bool:
        """Whether a storage node's seal marker (`<data>/<CTID>.sealed`, through the mount) is there."""
    def applying(self, ctid: int, epoch: int) -> AbstractContextManager[None]:
        """While an action of a manager of `epoch` runs on CT `ctid` here."""
    def oldest_applying(self) -> int | None:
        """The oldest epoch among the actions running here now (None: none runs)."""


class SpecStore:
    """The specs of the CTs this HN has a config for (state_dir/specs/CTID.json),
    as the manager sent them."""

    def __init__(self, state_dir: str) -> None:
        self.dir = Path(state_dir) / "specs"
        self._hashes: dict[int, tuple[tuple[int, int, int], str]] = {}  # CTID -> ((ino, mtime, size), hash)
        self._specs: dict[int, tuple[tuple[int, int, int], specs.Spec]] = {}  # the same, for parsed specs
        self._hashes_out: dict[int, str] = {}
        self._all_out: dict[int, specs.Spec] = {}

    def get(self, ctid: int) -> specs.Spec | None:
        try:
            return specs.parse((self.dir / f"{ctid}.json").read_bytes(), ctid)
        except FileNotFoundError:
            return None
        except InputError:
            return None  # unreadable: treated as absent, rewritten by the next create

    def put(self, ctid: int, raw: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if same_content(self.dir / f"{ctid}.json", raw, 0o600) is None:
            write_atomic(self.dir / f"{ctid}.json", raw, 0o600)

    def hashes(self) -> dict[int, str]:
        """CTID -> wire.spec.spec_hash of each stored spec, for the reports (the
        manager compares it with the configured spec: drift). Called every report
        (each second): a file is read and hashed again only when its inode, mtime
        or size changed (specs are replaced by rename: a new inode); an unreadable
        spec is left out, i.e. unknown."""
        out: dict[int, str] = {}
        seen: dict[int, tuple[tuple[int, int, int], str]] = {}
        for ctid, key, path in self._files():
            cached = self._hashes.get(ctid)
            digest = cached[1] if cached is not None and cached[0] == key else self._hash_file(path, ctid)
            if digest:
                out[ctid] = digest
                seen[ctid] = (key, digest)
        self._hashes = seen
        if out == self._hashes_out:
            return self._hashes_out  # the same object while nothing changed: callers may cache on it
        self._hashes_out = out
        return out

    def _files(self) -> Iterator[tuple[int, tuple[int, int, int], Path]]:
        """(CTID, (inode, mtime, size), path) of every spec file: what says a file changed."""
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return
        for e in entries:
            stem = e.name[:-5]
            if not e.name.endswith(".json") or not is_digits(stem):
                continue
            try:
                st = e.stat()
            except FileNotFoundError:
                continue  # destroyed meanwhile
            yield int(stem), (st.st_ino, st.st_mtime_ns, st.st_size), Path(e.path)

    @staticmethod
    def _hash_file(path: Path, ctid: int) -> str:
        try:
            raw = path.read_bytes()
            specs.parse(raw, ctid)  # only a spec that `get` would return counts
            return specs.spec_hash(json.loads(raw))
        except (OSError, InputError):
            return ""

    def drop(self, ctid: int) -> None:
        (self.dir / f"{ctid}.json").unlink(missing_ok=True)

    def all(self) -> dict[int, specs.Spec]:
        """Every readable spec. Read each report (its resources are what the HN has
        promised): a file is parsed again only when its inode, mtime or size changed."""
        out: dict[int, specs.Spec] = {}
        seen: dict[int, tuple[tuple[int, int, int], specs.Spec]] = {}
        for ctid, key, _ in self._files():
            cached = self._specs.get(ctid)
            spec = cached[1] if cached is not None and cached[0] == key else self.get(ctid)
            if spec is not None:
                out[ctid] = spec
                seen[ctid] = (key, spec)
        unchanged = seen.keys() == self._specs.keys() and all(seen[c][1] is self._specs[c][1] for c in seen)
        self._specs = seen
        if unchanged:
            return self._all_out
        self._all_out = out
        return out


class DiskNode:
    """The real HN: files under the agent's state_dir."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self._specs = SpecStore(config.state_dir)

    @property
    def specs(self) -> SpecStore:
        return self._specs

    def fence_state(self) -> tuple[bool | None, float | None]:
        try:
            state = json.loads(self.config.fence_file.read_text())
            return bool(state["fenced"]), float(state["at"])
        except (OSError, ValueError, KeyError, TypeError):
            return None, None

    def write_fence(self, fenced: bool, at: float) -> None:
        write_atomic(self.config.fence_file, json.dumps({"fenced": fenced, "at": at}).encode(), 0o644)

    def drained(self) -> bool:
        return self.config.drain_flag.exists()

    def sealed(self, marker: str) -> bool:
        return os.path.lexists(marker)  # whatever it holds, even a link: only ctstorage unseals

    def see_epoch(self, epoch: int) -> int:
        path = Path(self.config.state_dir) / "epoch"
        path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(open_lock(path.with_suffix(".lock")), "r+") as f:  # never truncated, never a link
            fcntl.flock(f, fcntl.LOCK_EX)  # read-compare-write: two applies may race
            try:
                text = path.read_text().strip()
                seen = int(text) if is_digits(text) else 0
            except FileNotFoundError:
                seen = 0
            if epoch > seen:
                write_atomic(path, f"{epoch}\n".encode(), 0o644)
            return seen

    @contextmanager
    def applying(self, ctid: int, epoch: int) -> Iterator[None]:
        """A marker `state_dir/applying/CTID` ("EPOCH PID") while the action runs (under
        the CT's lock); one left by a process that died is ignored (its PID is gone)."""
        folder = Path(self.config.state_dir) / "applying"
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / str(ctid)
        write_atomic(marker, f"{epoch} {os.getpid()}\n".encode(), 0o644, sync=False)  # gone with the action
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()

    def oldest_applying(self) -> int | None:
        folder = Path(self.config.state_dir) / "applying"
        oldest = None
        for marker in folder.iterdir() if folder.is_dir() else ():
            try:
                epoch, pid = (int(x) for x in marker.read_text().split())
                os.kill(pid, 0)
            except (OSError, ValueError):  # gone meanwhile, unreadable, or its process is dead
                continue
            oldest = epoch if oldest is None else min(oldest, epoch)
        return oldest

    @contextmanager
    def lock(self, ctid: int) -> Iterator[None]:
        """One action per CT at a time on this HN (the daemon and a CLI may both act)."""
        locks = Path(self.config.state_dir) / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with os.fdopen(open_lock(locks / f"{ctid}.lock"), "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield
