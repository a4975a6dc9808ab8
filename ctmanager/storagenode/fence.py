"""Fencing a CT's /data on a storage node: its seal and its pull token, as files
beside the CT's folder (never inside it: a CT sees only its own folder, so no CT
can lift its seal or forge a token).

    <data>/<CTID>.sealed    {"token": N, "sealed_at": T}: no CT may write this /data
                            any more (a tenant move copied it away). The HNs mount
                            <data> at {paths.data}/{storage}, so ctagent finds the
                            marker at ctfiles.data_dir(paths, ct) + ".sealed" and
                            refuses to start the CT (result "sealed").
    <data>/.tokens/<CTID>   the highest pull token this node has seen for the CT

Tokens are the move's leader epoch. They are compared per CT and per node only,
so the ones one node sees for one CT must come from one monotone source (the
epochs of the rack whose leader runs the move). A seal keeps the highest token
it was given (sealing is always safe: a lower one leaves the seal as it is); an
unseal lifts it only with a token at least that high. `remove` clears both.

Both files are written atomically: a temp file created exclusively (O_EXCL |
O_NOFOLLOW) in the same folder, fsynced, renamed over the old one, the folder
fsynced (a seal or a token lost in a crash would let stale work through).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

from .. import files
from ..errors import CtmError
from ..validate import is_digits

TOKENS = ".tokens"
MAX_TOKEN = (1 << 63) - 1
MAX_MARKER = 4096  # bytes: a marker is a short JSON object


class Failed(CtmError):
    """The command ran and failed: exit 1, the JSON says why."""

    exit_code = 1

    def fields(self) -> dict[str, Any]:
        return {}


class Stale(Failed):
    """A token older than one this node has recorded for the CT: the caller's
    leader no longer leads. Nothing was done."""

    def __init__(self, message: str, recorded: int) -> None:
        super().__init__(message)
        self.recorded = recorded

    def fields(self) -> dict[str, Any]:
        return {"stale": True, "token": self.recorded}


def marker_path(data: str, ctid: int) -> Path:
    return Path(data) / f"{ctid}.sealed"


def token_path(data: str, ctid: int) -> Path:
    return Path(data) / TOKENS / str(ctid)


def write_atomic(path: Path, body: bytes, mode: int = 0o644) -> None:
    """`path` holds `body`, or its old content after a crash; never half of it,
    never written through a link (files.write_atomic); the folder is fsync'd too:
    a seal or token that vanished after a crash would let a stale pull in."""
    files.write_atomic(path, body, mode, sync_folder=True)


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: Path) -> bytes | None:
    """A small file's content, None if there is none; a link is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Failed(f"{path} is a symbolic link; left alone") from None
        raise
    try:
        return os.read(fd, MAX_MARKER + 1)
    finally:
        os.close(fd)


def recorded_token(data: str, ctid: int) -> int:
    """The highest pull token recorded for the CT here (0: none)."""
    path = token_path(data, ctid)
    raw = _read(path)
    if raw is None:
        return 0
    text = raw.decode("ascii", "replace").strip()
    if not is_digits(text) or len(text) > 19:
        raise Failed(f"{path} holds no token ({text[:40]!r}); a pull must not guess: delete it by hand "
                     "if no move of the CT runs")
    return int(text)


def check_token(data: str, ctid: int, token: int, *, record: bool) -> int:
    """Refuse (Stale) a pull token lower than the recorded one; with `record`,
    a higher one becomes the recorded one. The caller holds the CT's state lock."""
    have = recorded_token(data, ctid)
    if token < have:
        raise Stale(f"stale token {token}: a pull of CT {ctid} with token {have} came here since (a newer leader "
                    "moves it); nothing done", have)
    if record and token > have:
        folder = Path(data) / TOKENS
        folder.mkdir(mode=0o700, exist_ok=True)
        write_atomic(token_path(data, ctid), f"{token}\n".encode(), 0o600)
    return token


def seal_of(data: str, ctid: int) -> dict[str, Any] | None:
    """The CT's seal ({token, sealed_at}), None if it is not sealed. A marker that
    is not one of ours still seals (it is never read as an absent one)."""
    path = marker_path(data, ctid)
    raw = _read(path)
    if raw is None:
        return None
    try:
        got = json.loads(raw[:MAX_MARKER])
        token, at = got["token"], got["sealed_at"]
        if type(token) is not int or not 0 <= token <= MAX_TOKEN or type(at) not in (int, float):
            raise ValueError("bad fields")
        return {"token": token, "sealed_at": float(at)}
    except (ValueError, KeyError, TypeError, RecursionError):
        return {"token": None, "sealed_at": None}


def seal(data: str, ctid: int, token: int, now: float) -> dict[str, Any]:
    """Seal the CT's /data here (idempotent). The caller holds the CT's state lock."""
    path = marker_path(data, ctid)
    old = seal_of(data, ctid)
    if old is not None and old["token"] is not None and old["token"] >= token:
        return {"sealed": True, "changed": False, **old, "path": str(path)}
    at = old["sealed_at"] if old is not None and old["sealed_at"] is not None else round(now, 3)
    write_atomic(path, json.dumps({"token": token, "sealed_at": at}, sort_keys=True).encode() + b"\n")
    return {"sealed": True, "changed": old is None, "token": token, "sealed_at": at, "path": str(path)}


def unseal(data: str, ctid: int, token: int) -> dict[str, Any]:
    """Lift the CT's seal here if `token` is at least the seal's (idempotent).
    The caller holds the CT's state lock."""
    path = marker_path(data, ctid)
    old = seal_of(data, ctid)
    if old is None:
        return {"sealed": False, "changed": False, "path": str(path)}
    if old["token"] is None:
        raise Failed(f"{path} is not a seal ctstorage wrote; left alone (delete it by hand if no move of CT "
                     f"{ctid} runs)")
    if token < old["token"]:
        raise Stale(f"stale token {token}: CT {ctid}'s /data was sealed with token {old['token']} (a newer leader "
                    "moves it); still sealed", old["token"])
    path.unlink()
    _sync_folder(path.parent)
    return {"sealed": False, "changed": True, "path": str(path)}


def clear(data: str, ctid: int) -> list[str]:
    """Forget the CT's seal and pull token here (`ctstorage remove`): which were there."""
    cleared = []
    for what, path in (("seal", marker_path(data, ctid)), ("token", token_path(data, ctid))):
        if path.is_dir() and not path.is_symlink():
            raise Failed(f"{path} is a folder; left alone")
        try:
            path.unlink()
            cleared.append(what)
        except FileNotFoundError:
            pass
    if cleared:
        _sync_folder(Path(data))
        if "token" in cleared:
            _sync_folder(Path(data) / TOKENS)
    return cleared
