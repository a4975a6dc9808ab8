"""`ctstorage`: what a storage node does for a tenant move, one JSON line out.

    ctstorage info CTID                                 its /data: path, bytes, files; the node's free space
    ctstorage pull CTID --from IP --path PATH [--bwlimit BYTES] [--timeout S]
                                                        mirror the peer's PATH/ into this node's <data>/CTID/
    ctstorage remove CTID                               delete this node's <data>/CTID (idempotent)
    ctstorage cancel CTID                               stop this node's running pull of CTID (an abort)

Its config ($CTSTORAGE_CONFIG, default /etc/ctmanager/ctstorage.toml):

    data = "/export/data"                     # per-CT /data folders, <data>/<CTID>
    [ssh]                                     # how this node reads its peers' /data (pull)
    user = "root"
    key_file = "/etc/ctmanager/storage_ed25519"          # mode 0600
    known_hosts = "/etc/ctmanager/storage_known_hosts"   # the peers' host keys, pinned
    connect_timeout = 5
    control_dir = "/run/ctstorage"            # one SSH connection per peer, kept 2 min (the last pass
                                              # of a move then skips the handshake)

Exit codes: 0 done, 1 failed (the JSON says why), 2 bad input. Nothing of the
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..dc import tomlread
from ..errors import CtmError, InputError
from ..wire import validate as v
from . import rsync

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
    target = _folder(cfg, args.ctid)
    target.mkdir(mode=0o755, exist_ok=True)
    ssh = ["ssh", "-i", cfg.key_file, "-l", cfg.user, "-o", f"UserKnownHostsFile={cfg.known_hosts}",
           "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
           "-o", f"ConnectTimeout={cfg.connect_timeout}", "-o", "ServerAliveInterval=5",
           "-o", "ControlMaster=auto", "-o", f"ControlPath={cfg.control_dir}/%C", "-o", "ControlPersist=120"]
    argv = rsync.pull_argv("rsync", f"{address}:{source}", str(target), ssh=ssh, bwlimit=args.bwlimit,
                           timeout=max(int(args.timeout), 10))
    started = time.monotonic()
    pidfile = _pidfile(cfg, args.ctid)
    with _only_one(cfg, args.ctid), subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          stdin=subprocess.DEVNULL) as p:
        pidfile.write_text(f"{p.pid}\n")  # for `ctstorage cancel`
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
    return {"ctid": args.ctid, "seconds": round(time.monotonic() - started, 3), "bytes": stats.bytes,
            "files_transferred": stats.files_transferred, "total_bytes": stats.total_bytes, "files": stats.files,
            "literal": stats.literal, "vanished": p.returncode == 24}


def _pidfile(cfg: StorageConfig, ctid: int) -> Path:
    return Path(cfg.control_dir) / f"pull-{ctid}.pid"


@contextlib.contextmanager
def _only_one(cfg: StorageConfig, ctid: int) -> Iterator[None]:
    """One pull or remove of a CT's /data at a time on this node. A pull still
    running is an orphan (its manager died, the next one asks again): it is
    stopped, and this one waits for it (at most LOCK_WAIT s)."""
    os.makedirs(cfg.control_dir, mode=0o700, exist_ok=True)
    with open(Path(cfg.control_dir) / f"ct-{ctid}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _stop_pull(cfg, ctid)
            deadline = time.monotonic() + LOCK_WAIT
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise Failed(f"another pull of CT {ctid} runs here and did not stop") from None
                    time.sleep(0.1)
        yield


def _stop_pull(cfg: StorageConfig, ctid: int) -> bool:
    try:
        pid = int(_pidfile(cfg, ctid).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return False
    if not cmdline or not cmdline[0].endswith(b"rsync") or str(_folder(cfg, ctid)).encode() + b"/" not in cmdline:
        return False  # a stale pid file: that process is not our pull
    os.kill(pid, signal.SIGTERM)
    return True


def cmd_cancel(cfg: StorageConfig, args: argparse.Namespace) -> dict[str, Any]:
    """Stop the running pull of a CT (its rsync), if any: the pull then fails."""
    return {"ctid": args.ctid, "cancelled": _stop_pull(cfg, args.ctid)}


def cmd_remove(cfg: StorageConfig, args: argparse.Namespace) -> dict[str, Any]:
    with _only_one(cfg, args.ctid):  # never while a pull writes into it
        return _remove(cfg, args.ctid)


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


class Failed(CtmError):
    exit_code = 1


def build_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="ctstorage", description="a storage node's side of a tenant move")
    top.add_argument("--config", help=f"config file (default: ${ENV_VAR}, else {DEFAULT_CONFIG})")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    ctid = v.int_arg(1, v.MAX_CTID)
    p = sub.add_parser("info", help="a CT's /data here: path, bytes, files; this node's free space")
    p.add_argument("ctid", type=ctid)
    p = sub.add_parser("pull", help="mirror a peer storage node's copy of a CT's /data into this node's")
    p.add_argument("ctid", type=ctid)
    p.add_argument("--from", dest="from_", required=True, metavar="IP", help="the peer storage node")
    p.add_argument("--path", required=True, help="the CT's /data folder on the peer")
    p.add_argument("--bwlimit", type=v.int_arg(0, 1 << 40), default=0, help="bytes per second (0: no limit)")
    p.add_argument("--timeout", type=v.seconds_arg(1, 7 * 86400), default=3600.0, help="seconds for the whole copy")
    p = sub.add_parser("remove", help="delete this node's copy of a CT's /data")
    p.add_argument("ctid", type=ctid)
    p = sub.add_parser("cancel", help="stop this node's running pull of a CT's /data")
    p.add_argument("ctid", type=ctid)
    return top


COMMANDS = {"info": cmd_info, "pull": cmd_pull, "remove": cmd_remove, "cancel": cmd_cancel}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load(Path(v.path(args.config or os.environ.get(ENV_VAR) or DEFAULT_CONFIG, "--config")))
        out = COMMANDS[args.command](cfg, args)
    except (CtmError, ValueError, KeyError, OSError) as exc:  # one JSON line, never a traceback
        message = str(exc) if not isinstance(exc, OSError) else f"{exc.filename or ''}: {exc.strerror or exc}"
        print(json.dumps({"ok": False, "error": message}))
        return getattr(exc, "exit_code", 1) if isinstance(exc, InputError) else 1
    print(json.dumps({"ok": True, **out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
