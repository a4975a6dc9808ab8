"""The rack key, and how it is rotated without a forged report or a fence.

Every machine of a rack (its managers, its HNs) holds the key in `key_file`;
during a rotation also `<key_file>.next` (the new key, staged) or
`<key_file>.prev` (the old one, after the switch). A machine signs with
`key_file` and accepts a report signed with any of the three. The rotation is
three steps, each done on every machine before the next begins:

    stage    <key_file>.next = the new key     everyone still signs with the old
    switch   <key_file>.prev = the old key,    machines switch one by one: each
             <key_file> = the new key          accepts both, so none is forged
    retire   <key_file>.prev removed           the old key is refused from now on

A Keyring re-reads the files when they change (checked at most once per
`every` seconds, when signing and whenever a MAC does not match), so no daemon
restarts. A file that cannot be used (mode, hex, length) is logged and the keys
in hand are kept: a mistake on one machine does not silence it.

A key's id (`key_id`) is the start of its SHA-256: it names a key in logs, in
`rack key status` and in the managers' check-ins (the keys a running manager
holds) without telling anything of it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import InputError
from ..files import check_private

log = logging.getLogger(__name__)
MIN_KEY = 16  # bytes
NEXT, PREV = ".next", ".prev"


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:12]


def parse_key(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise InputError("the rack key must be hex", where=where) from None
    if len(key) < MIN_KEY:
        raise InputError(f"the rack key must be at least {MIN_KEY} bytes", where=where)
    return key


def read_key(path: Path, where: str) -> bytes:
    """A rack key file: private to its owner and group (a deployment may share it by
    group), hex, at least 16 bytes. One-line InputError naming `where` otherwise."""
    try:
        check_private(path, "rack key", group_reads=True)
    except InputError as exc:
        raise InputError(str(exc), where=where) from None
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read the rack key: {exc.strerror}", where=where) from None
    return parse_key(text, where)


Stamp = tuple[int, int, int, int, int, int, int]


def _stamp(path: Path) -> Stamp | None:
    """What changes when a key file is replaced, rewritten, or made readable: its
    ctime moves on chmod and chown too (a file refused for its mode or owner is read
    again once that is fixed)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_mode, st.st_uid, st.st_gid)


class Keyring:
    """The keys a machine signs and verifies with (see the module's text)."""

    def __init__(self, path: Path, where: str, *, every: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.where, self.every, self.clock = path, where, every, clock
        self.current = read_key(path, where)  # refused at start: a daemon must not run keyless
        self.next: bytes | None = None
        self.prev: bytes | None = None
        self._stamps: tuple[Stamp | None, ...] = ()
        self._checked = -float("inf")
        self.refresh(force=True)

    def verifiers(self) -> tuple[bytes, ...]:
        """The keys a report may be signed with: the current one first (the usual case)."""
        return tuple(k for k in (self.current, self.next, self.prev) if k is not None)

    def ids(self) -> dict[str, str]:
        return {name: key_id(k) for name, k in (("current", self.current), ("next", self.next),
                                                 ("prev", self.prev)) if k is not None}

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the files if any changed since the last look (at most once per
        `every` s unless `force`). True if the keys changed."""
        now = self.clock()
        if not force and now - self._checked < self.every:
            return False
        self._checked = now
        files = (self.path, self.path.with_name(self.path.name + NEXT), self.path.with_name(self.path.name + PREV))
        stamps = tuple(_stamp(p) for p in files)
        if stamps == self._stamps:
            return False
        before = self.ids()
        keys: list[bytes | None] = []
        for i, p in enumerate(files):
            if stamps[i] is None:
                keys.append(None)
                continue
            try:
                keys.append(read_key(p, f"{self.where}: {p.name}" if self.where else p.name))
            except InputError as exc:  # keep what works: one bad file must not silence the machine
                log.error("rack key %s left as it was: %s", p, exc)
                keys.append(getattr(self, ("current", "next", "prev")[i]))
        # no current file (between a rename and the next one): keep signing with what we had
        self.current = keys[0] if keys[0] is not None else self.current
        self.next, self.prev = keys[1], keys[2]
        self._stamps = stamps
        after = self.ids()
        if after != before and before:
            log.info("rack key: %s", ", ".join(f"{name} {i}" for name, i in after.items()))
        return after != before


def key_ids(key: bytes | Keyring) -> str:
    """`current=ID[,next=ID][,prev=ID]`: what a manager checks in with (no secret in it)."""
    if isinstance(key, Keyring):
        key.refresh()  # a standby signs nothing: its check-in is where it looks at its files
        ids = key.ids()
    else:
        ids = {"current": key_id(key)}
    return ",".join(f"{name}={i}" for name, i in ids.items())


def parse_ids(text: str) -> dict[str, str]:
    """The ids a manager checked in with (`key_ids`), {} if none (a manager older than that)."""
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name in ("current", "next", "prev") and value:
            out[name] = value
    return out


# ---- the three steps, on one machine (ctagent key, ctmanager rack key) ----------------
def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _write_like(path: Path, key: bytes, like: Path) -> None:
    """`key` into `path`, owned and moded as `like` before it takes its name (a daemon
    running as the key's group reads it at once): a temp file made exclusively, no
    link followed, renamed over `path`."""
    from ..files import write_atomic

    st = os.stat(like)
    tmp = path.with_name(f".{path.name}.new")
    write_atomic(tmp, (key.hex() + "\n").encode(), st.st_mode & 0o640, sync_folder=False)
    try:
        if os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_owner(path: Path, like: Path, where: str) -> None:
    """A key file copied from elsewhere (scp, a config tool) must be owned and moded
    as `like`: else the daemon, running as the key's group, cannot read it."""
    a, b = os.stat(path), os.stat(like)
    if (a.st_uid, a.st_gid, a.st_mode & 0o777) != (b.st_uid, b.st_gid, b.st_mode & 0o777):
        raise InputError(f"{path} is owned or moded unlike {like} (uid {a.st_uid} gid {a.st_gid} mode "
                         f"{a.st_mode & 0o777:o}, not uid {b.st_uid} gid {b.st_gid} mode {b.st_mode & 0o777:o}): "
                         f"chown --reference={like} {path} && chmod --reference={like} {path}", where=where)


def state(path: Path, where: str) -> dict[str, str]:
    """The ids of the keys this machine holds: current, and next or prev if any."""
    ring = Keyring(path, where)
    return ring.ids()


def stage(path: Path, key: bytes, where: str) -> dict[str, str]:
    """Step 1: the new key beside the current one (accepted, not yet used to sign).
    Again with the same key: nothing changes. Refused while a previous key is still
    held (retire it first) or if the new key is the current one."""
    ring = Keyring(path, where)
    if ring.prev is not None:
        raise InputError(f"a previous key ({key_id(ring.prev)}) is still held: retire it first", where=where)
    if key == ring.current:
        raise InputError(f"key {key_id(key)} is already the current key", where=where)
    if ring.next is not None and ring.next != key:
        raise InputError(f"another key ({key_id(ring.next)}) is staged: switch to it, or remove "
                         f"{_sibling(path, NEXT)} to stage this one", where=where)
    if ring.next != key:
        _write_like(_sibling(path, NEXT), key, path)
    else:
        _same_owner(_sibling(path, NEXT), path, where)
    return state(path, where)


def switch(path: Path, where: str, expect: str = "") -> dict[str, str]:
    """Step 2: sign with the staged key from now on; the old one is kept as previous
    (still accepted). `expect`: the staged key's id, refused if another is staged.
    Done already (no next, a previous key): nothing changes."""
    ring = Keyring(path, where)
    if ring.next is None:
        if ring.prev is not None and (not expect or key_id(ring.current) == expect):
            return ring.ids()
        raise InputError("no key is staged: stage one first", where=where)
    if expect and key_id(ring.next) != expect:
        raise InputError(f"the staged key is {key_id(ring.next)}, not {expect}", where=where)
    _same_owner(_sibling(path, NEXT), path, where)
    # prev first, then the rename: at every moment the files hold both keys
    _write_like(_sibling(path, PREV), ring.current, path)
    os.replace(_sibling(path, NEXT), path)
    return state(path, where)


def retire(path: Path, where: str) -> dict[str, str]:
    """Step 3: the previous key is refused from now on. Nothing held: nothing changes.
    Refused while a key is staged (a rotation half done)."""
    ring = Keyring(path, where)
    if ring.next is not None:
        raise InputError(f"key {key_id(ring.next)} is staged, not switched to: switch first", where=where)
    try:
        os.unlink(_sibling(path, PREV))
    except FileNotFoundError:
        pass
    return state(path, where)


def new_key() -> bytes:
    return os.urandom(32)
