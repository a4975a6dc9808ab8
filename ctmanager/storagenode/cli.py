"""`ctstorage`: what a storage node does for a tenant move, one JSON line out.

    ctstorage info CTID                                 its /data: path, bytes, files; the node's free space
    ctstorage pull CTID --from IP --path PATH --token N [--bwlimit BYTES] [--timeout S]
                                                        mirror the peer's PATH/ into this node's <data>/CTID/
    ctstorage seal CTID --token N                       no CT may write <data>/CTID any more (<data>/CTID.sealed)
    ctstorage unseal CTID --token N                     lift that seal, if N is at least the seal's token
    ctstorage remove CTID                               delete this node's <data>/CTID, its seal and its pull
                                                        token (idempotent)
    ctstorage cancel CTID                               stop this node's running pull of CTID (an abort)

Fencing (fence.py): `--token` is the move's leader epoch. This node keeps the
highest pull token per CT in <data>/.tokens/CTID (recorded under the CT's state
lock as the pull arrives, checked again under its pull lock before rsync starts;
the running pull's token is in its pid file). A pull with a lower token is
refused and changes nothing, so a late pull of a former leader never overwrites
newer data; one with a token at least as high first stops a running pull of the
CT (an orphan, or the former leader's). `--token` is required: there is no
unfenced pull. 0 is accepted and is simply the lowest token (what a CT with none
recorded has), refused once a higher one was seen; the manager (its move
effects, updated together) passes its epoch. An HN's ctagent refuses to start a
CT whose /data is sealed.

Its config ($CTSTORAGE_CONFIG, default /etc/ctmanager/ctstorage.toml):

    data = "/export/data"                     # per-CT /data folders, <data>/<CTID>
    [ssh]                                     # how this node reads its peers' /data (pull)
    user = "root"
    key_file = "/etc/ctmanager/storage_ed25519"          # mode 0600
    known_hosts = "/etc/ctmanager/storage_known_hosts"   # the peers' host keys, pinned
    connect_timeout = 5
    control_dir = "/run/ctstorage"            # one SSH connection per peer, kept 2 min (the last pass
                                              # of a move then skips the handshake); the CTs' locks

Exit codes: 0 done, 1 failed (the JSON says why; a stale token adds `"stale": true`
and the recorded `"token"`), 2 bad input (one JSON line too). Nothing of the
manager or the store is imported: this runs as root on every storage node.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import add_version_flag
from .. import validate as v
from ..dc import tomlread
from ..errors import CtmError, InputError
from ..files import check_private, open_lock, write_atomic
from . import fence, rsync
from .fence import Failed

ENV_VAR = "CTSTORAGE_CONFIG"
LOCK_WAIT = 30.0  # s a pull waits for an orphaned one of the same CT to stop
DEFAULT_CONFIG = "/etc/ctmanager/ctstorage.toml"


@dataclass(frozen=True)
class StorageConfig:
    data: str
    user: str
    key_file: str
    known_hosts: str
    connect_timeout: int
    control_dir: str = "/run/ctstorage"


def load(path: Path) -> StorageConfig:
    top = tomlread.load(path)
    data = top.check("data", v.path, top.str("data", "/export/data"))
    ssh = top.table("ssh", required=False)
    user = ssh.check("user", v.label, ssh.str("user", "root"))
    key = ssh.check("key_file", v.path, ssh.str("key_file", "/etc/ctmanager/storage_ed25519"))
    known = ssh.check("known_hosts", v.path, ssh.str("known_hosts", "/etc/ctmanager/storage_known_hosts"))
    timeout = ssh.check("connect_timeout", lambda x, f: v.integer(x, f, minimum=1, maximum=120),
                        ssh.int("connect_timeout", 5))
    control = ssh.check("control_dir", v.path, ssh.str("control_dir", "/run/ctstorage"))
    ssh.done()
    top.done()
    check_private(key, "SSH key", where=f"{path}: ssh.key_file")
    return StorageConfig(data, user, key, known, timeout, control)


def _folder(cfg: StorageConfig, ctid: int) -> Path:
    return Path(cfg.data) / str(ctid)


def cmd_info(cfg: StorageConfig, args: argparse.Namespace) -> dict[str, Any]:
    folder = _folder(cfg, args.ctid)
    size = files = 0
    if folder.is_dir():
        for root, dirs, names in os.walk(folder):
            files += len(names) + len(dirs)
            for n in names:
                try:
                    size += os.lstat(os.path.join(root, n)).st_size
                except OSError:
                    pass  # gone meanwhile: the CT is running
    fs = os.statvfs(cfg.data)
    return {"ctid": args.ctid, "path": str(folder), "exists": folder.is_dir(), "bytes": size, "files": files,
            "free": fs.f_bavail * fs.f_frsize, "total": fs.f_blocks * fs.f_frsize}


def cmd_pull(cfg: StorageConfig, args: argparse.Namespace) -> dict[str, Any]:
    source = v.path(args.path, "--path")
    address = str(v.ipv4(args.from_, "--from"))
    ctid, token = args.ctid, args.token
    target = _folder(cfg, ctid)
    ssh = ["ssh", "-i", cfg.key_file, "-l", cfg.user, "-o", f"UserKnownHostsFile={cfg.known_hosts}",
           "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
           "-o", f"ConnectTimeout={cfg.connect_timeout}", "-o", "ServerAliveInterval=5",
           "-o", "ControlMaster=auto", "-o", f"ControlPath={cfg.control_dir}/%C", "-o", "ControlPersist=120"]
    argv = rsync.pull_argv("rsync", f"{address}:{source}", str(target), ssh=ssh, bwlimit=args.bwlimit,
                           timeout=max(int(args.timeout), 10))
    with _state_lock(cfg, ctid):  # at once: later pulls of a former leader are refused from now on
        fence.check_token(cfg.data, ctid, token, record=True)
    started = time.monotonic()
    pidfile = _pidfile(cfg, ctid)
    with _only_one(cfg, ctid, token):  # stops a running pull of a token up to this one
        with _state_lock(cfg, ctid):  # a newer pull may have come while this one waited
            fence.check_token(cfg.data, ctid, token, record=True)
        target.mkdir(mode=0o755, exist_ok=True)
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL) as p:
            write_atomic(pidfile, f"{p.pid} {token}\n".encode(), 0o644)  # for `ctstorage cancel`, a newer pull
            try:
                out, err = p.communicate(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                raise Failed(f"rsync did not finish within {args.timeout:g} s") from None
            finally:
                pidfile.unlink(missing_ok=True)
    if p.returncode not in rsync.OK_CODES:
        raise Failed(rsync.failure(p.returncode, err))
    stats = rsync.parse_stats(out)
    return {"ctid": ctid, "token": token, "seconds": round(time.monotonic() - started, 3), "bytes": stats.bytes,
            "files_transferred": stats.files_transferred, "total_bytes": stats.total_bytes, "files": stats.files,
            "literal": stats.literal, "vanished": p.returncode == 24}


def _pidfile(cfg: StorageConfig, ctid: int) -> Path:
    return Path(cfg.control_dir) / f"pull-{ctid}.pid"


@contextlib.contextmanager
def _only_one(cfg: StorageConfig, ctid: int, token: int | None = None) -> Iterator[None]:
    """One pull or remove of a CT's /data at a time on this node. A pull still
    running is an orphan (its manager died, the next one asks again) or a former
    leader's: it is stopped, and this one waits for it (at most LOCK_WAIT s).
    `token`: this pull's; a running pull with a higher one is not stopped (Stale)."""
    with _flock(cfg, f"ct-{ctid}.lock", on_busy=lambda: _stop_pull(cfg, ctid, token),
                why=f"another pull of CT {ctid} runs here and did not stop"):
        yield


@contextlib.contextmanager
def _state_lock(cfg: StorageConfig, ctid: int) -> Iterator[None]:
    """The CT's seal and token files change one at a time (held for milliseconds)."""
    with _flock(cfg, f"ct-{ctid}.state.lock", on_busy=lambda: False,
                why=f"CT {ctid}'s seal and token files are locked by another ctstorage"):
        yield


@contextlib.contextmanager
def _flock(cfg: StorageConfig, name: str, on_busy: Callable[[], object], why: str) -> Iterator[None]:
    os.makedirs(cfg.control_dir, mode=0o700, exist_ok=True)
    with os.fdopen(open_lock(Path(cfg.control_dir) / name), "r+") as lock:  # never through a link
        deadline = time.monotonic() + LOCK_WAIT
        busy_at = 0.0
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if now > deadline:
                    raise Failed(why) from None
                if now - busy_at >= 1.0:  # again each second: its rsync may not have started the first time
                    on_busy()
                    busy_at = now
                time.sleep(0.05)
        yield


def _stop_pull(cfg: StorageConfig, ctid: int, token: int | None = None) -> bool:
    """SIGTERM to the running pull of CT `ctid`, if any. With `token` (a newer
    pull's), one of a higher token is left running: Stale."""
    try:
        words = _pidfile(cfg, ctid).read_text().split()
        pid, running = int(words[0]), int(words[1]) if len(words) > 1 else 0
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return False
    if not cmdline or not cmdline[0].endswith(b"rsync") or str(_folder(cfg, ctid)).encode() + b"/" not in cmdline:
        return False  # a stale pid file: that process is not our pull
    if token is not None and running > token:
        raise fence.Stale(f"stale token {token}: a pull of CT {ctid} with token {running} runs here (a newer "
                          "leader moves it); nothing done", running)
    os.kill(pid, signal.SIGTERM)
    return True


def cmd_cancel(cfg: StorageConfig, args: argparse.Namespace) -> dict[str, Any]:
    """Stop the running pull of a CT (its rsync), if any: the pull then fails."""
    return {"ctid": args.ctid, "cancelled": _stop_pull(cfg, args.ctid)}


def cmd_seal(cfg: StorageConfig, args: argparse.Namespace) -> dict[str, Any]:
    with _state_lock(cfg, args.ctid):
        return {"ctid": args.ctid, **fence.seal(cfg.data, args.ctid, args.token, time.time())}


def cmd_unseal(cfg: StorageConfig, args: argparse.Namespace) -> dict[str, Any]:
    with _state_lock(cfg, args.ctid):
        return {"ctid": args.ctid, **fence.unseal(cfg.data, args.ctid, args.token)}


def cmd_remove(cfg: StorageConfig, args: argparse.Namespace) -> dict[str, Any]:
    with _only_one(cfg, args.ctid):  # never while a pull writes into it
        out = _remove(cfg, args.ctid)
        with _state_lock(cfg, args.ctid):  # after the folder: a half-done remove leaves the seal on
            out["cleared"] = fence.clear(cfg.data, args.ctid)
        return out


def _remove(cfg: StorageConfig, ctid: int) -> dict[str, Any]:
    folder = _folder(cfg, ctid)
    if not folder.exists() and not folder.is_symlink():
        return {"ctid": ctid, "removed": False, "path": str(folder)}
    if folder.is_symlink() or not folder.is_dir():
        raise Failed(f"{folder} is not a folder; left alone")
    if os.path.ismount(folder):  # a volume of its own: empty it, the mount stays
        for child in folder.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    else:
        shutil.rmtree(folder)
    return {"ctid": ctid, "removed": True, "path": str(folder)}


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one JSON line like every answer (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(json.dumps({"ok": False, "error": f"{self.prog}: {message} (see: {self.prog} --help)"}))
        sys.exit(2)


def build_parser() -> Parser:
    top = Parser(prog="ctstorage", description="a storage node's side of a tenant move")
    top.add_argument("--config", help=f"config file (default: ${ENV_VAR}, else {DEFAULT_CONFIG})")
    add_version_flag(top)
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    ctid = v.int_arg(1, v.MAX_CTID)
    p = sub.add_parser("info", help="a CT's /data here: path, bytes, files; this node's free space")
    p.add_argument("ctid", type=ctid)
    p = sub.add_parser("pull", help="mirror a peer storage node's copy of a CT's /data into this node's")
    p.add_argument("ctid", type=ctid)
    p.add_argument("--from", dest="from_", required=True, metavar="IP", help="the peer storage node")
    p.add_argument("--path", required=True, help="the CT's /data folder on the peer")
    _token_arg(p)
    p.add_argument("--bwlimit", type=v.int_arg(0, 1 << 40), default=0, help="bytes per second (0: no limit)")
    p.add_argument("--timeout", type=v.seconds_arg(1, 7 * 86400), default=3600.0, help="seconds for the whole copy")
    p = sub.add_parser("seal", help="mark a CT's /data here as no longer writable by a CT (ctagent refuses it)")
    p.add_argument("ctid", type=ctid)
    _token_arg(p)
    p = sub.add_parser("unseal", help="lift a CT's seal here, if the token is at least the seal's")
    p.add_argument("ctid", type=ctid)
    _token_arg(p)
    p = sub.add_parser("remove", help="delete this node's copy of a CT's /data, its seal and its pull token")
    p.add_argument("ctid", type=ctid)
    p = sub.add_parser("cancel", help="stop this node's running pull of a CT's /data")
    p.add_argument("ctid", type=ctid)
    return top


def _token_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token", type=v.int_arg(0, fence.MAX_TOKEN), required=True, metavar="N",
                   help="the move's leader epoch (its fencing token)")


COMMANDS = {"info": cmd_info, "pull": cmd_pull, "seal": cmd_seal, "unseal": cmd_unseal, "remove": cmd_remove,
            "cancel": cmd_cancel}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load(Path(v.path(args.config or os.environ.get(ENV_VAR) or DEFAULT_CONFIG, "--config")))
        out = COMMANDS[args.command](cfg, args)
    except (CtmError, ValueError, KeyError, OSError) as exc:  # one JSON line, never a traceback
        message = str(exc) if not isinstance(exc, OSError) else f"{exc.filename or ''}: {exc.strerror or exc}"
        extra = exc.fields() if isinstance(exc, Failed) else {}
        print(json.dumps({"ok": False, "error": message, **extra}))
        return getattr(exc, "exit_code", 1) if isinstance(exc, InputError) else 1
    print(json.dumps({"ok": True, **out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
