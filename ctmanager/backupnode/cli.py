"""`ctbackup`: a storage node's continuous backups of every CT's /data.

    ctbackup run                              the daemon: inotify + hourly scan -> borg, append-only
    ctbackup status                           per CT: newest restore point, age, OK/LATE/NEVER, alarm
    ctbackup list CTID                        a CT's restore points, oldest first
    ctbackup restore CTID [--at T | --archive NAME] (--to DIR | --in-place)
                                              DIR/<CTID>, or the CT's own folder (stop the CT first)
    ctbackup verify                           borg check --verify-data; archives deleted behind our back
    ctbackup prune --keep-within 30d          with the prune key's config (the backup side): older points go
    ctbackup hook [--data /data] -- CMD ...   inside a CT: run CMD (e.g. a dump) before each of its backups

Config: $CTBACKUP_CONFIG, default /etc/ctmanager/ctbackup.toml (see config.py).
Every command but `run` prints one JSON line. Exit codes: 0 done, 1 failed (the
JSON says why), 2 bad input. Nothing of the manager or the store is imported:
this runs as root on every storage node.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import add_version_flag, daemonlog
from .. import validate as v
from ..errors import CtmError, InputError
from ..sdnotify import Notifier
from . import borg, hook, restore, scan
from .catalogue import Catalogue, Point
from .config import DEFAULT, ENV_VAR, BackupConfig, load
from .daemon import STATE_FILE, Cycle, serve
from .watch import Dirty, Watcher

log = logging.getLogger("ctbackup")


def _log(line: str) -> None:
    """One line of the daemon's (an alarm, `ALARM …`, at warning: err in the journal, daemonlog)."""
    (log.warning if line.startswith(daemonlog.ALARM) else log.info)("%s", line)


def _log_setup() -> None:
    """stderr: under journald with priorities, else today's `2026-12-07T10:00:01Z ctbackup: …`."""
    daemonlog.setup("ctbackup", fmt="%(asctime)s ctbackup: %(message)s", datefmt="%Y-%m-%dT%H:%M:%SZ", utc=True)


def cmd_run(cfg: BackupConfig, args: argparse.Namespace) -> dict[str, Any]:
    notifier = Notifier.from_env()  # (taken out of the environment: borg and ssh do not inherit it)
    catalogue = Catalogue(Path(cfg.state_dir))
    dirty = Dirty()
    cycle = Cycle(cfg, catalogue, dirty, _log, alive=notifier.alive)
    data = Path(cfg.data)

    def lost() -> None:
        _log("ALARM inotify lost events (queue overflow or watch limit): every CT is due")
        dirty.mark_all([c for c, _ in scan.ct_folders(data)], time.time())

    watcher = Watcher(data, lambda ctid: dirty.mark(ctid, time.time()), lost)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    watcher.start()
    _log(f"watching {data} for {cfg.node}; repository {cfg.repo.location}; RPO {cfg.rpo} s")
    notifier.ready(f"watching {data}")  # before the start's scan, which may take long: changes are caught now
    try:
        serve(cycle, stop)
    finally:
        notifier.stopping()
        watcher.stop()
    return {"stopped": True}


def cmd_status(cfg: BackupConfig, args: argparse.Namespace) -> dict[str, Any]:
    cts = [c for c, _ in scan.ct_folders(Path(cfg.data))]
    catalogue = Catalogue(Path(cfg.state_dir))
    states = catalogue.states(cts, time.time(), cfg.rpo)
    return {"node": cfg.node, "rpo": cfg.rpo, "repository": cfg.repo.location,
            "repository_bytes": catalogue.last.repository if catalogue.last else 0,
            **_daemon(Path(cfg.state_dir)), "cts": [asdict(s) for s in states]}


def _daemon(state_dir: Path) -> dict[str, Any]:
    """Whether the daemon runs (its pid is alive) and the repository's error it last met."""
    try:
        d = json.loads((state_dir / STATE_FILE).read_text())
        pid = int(d["pid"])
        os.kill(pid, 0)
        running = Path(f"/proc/{pid}/cmdline").read_bytes().find(b"ctbackup") >= 0
    except (OSError, ValueError, KeyError, TypeError):
        return {"daemon": False, "error": "", "error_since": None}
    return {"daemon": running, "error": str(d.get("error") or ""), "error_since": d.get("error_since")}


def cmd_list(cfg: BackupConfig, args: argparse.Namespace) -> dict[str, Any]:
    """The repository's restore points of the CT; with what this node's log says each
    one read and added (a point it did not make, or from before a compaction: unknown)."""
    points = restore.archives(cfg)
    made = Catalogue(Path(cfg.state_dir)).points()
    return {"ctid": args.ctid, "points": [{"archive": a.name, "at": a.at, **_sizes(made.get(a.name))}
                                          for a in borg.points(points, args.ctid)]}


def _sizes(p: Point | None) -> dict[str, Any]:
    return {"files": None, "read_bytes": None, "new_bytes": None} if p is None else \
        {"files": p.files, "read_bytes": p.original, "new_bytes": p.new}


def cmd_restore(cfg: BackupConfig, args: argparse.Namespace) -> dict[str, Any]:
    chosen = restore.pick(restore.archives(cfg), args.ctid, args.at, args.archive)
    if args.in_place:
        where = restore.in_place(cfg, chosen, args.ctid)
    else:
        where = restore.extract(cfg, chosen, args.ctid, Path(v.path(args.to, "--to")))
    return {"ctid": args.ctid, "archive": chosen.name, "at": chosen.at, "path": str(where), "in_place": args.in_place}


def cmd_verify(cfg: BackupConfig, args: argparse.Namespace) -> dict[str, Any]:
    report = restore.verify(cfg, Catalogue(Path(cfg.state_dir)).recorded())
    missing = list(report["missing"])
    if missing:
        raise restore.RestoreFailed(f"{len(missing)} restore point(s) this node made are gone from the "
                                    f"repository (deleted behind its back): {' '.join(missing[:5])}")
    if not report["checked"]:
        raise restore.RestoreFailed(f"borg check --verify-data failed: {report['check_error']}")
    return report


def cmd_prune(cfg: BackupConfig, args: argparse.Namespace) -> dict[str, Any]:
    return restore.prune(cfg, args.keep_within)


def when(text: str) -> float:
    """--at: an ISO time (2026-12-02T22:41:00Z; no zone means UTC) or epoch seconds."""
    t = text.strip()
    try:
        if v.is_digits(t.replace(".", "", 1)):
            return float(t)
        d = datetime.fromisoformat(t.replace("Z", "+00:00"))
        return (d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time like 2026-12-02T22:41:00Z: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="ctbackup", description="a storage node's continuous backups of /data")
    add_version_flag(top)
    top.add_argument("--config", help=f"config file (default: ${ENV_VAR}, else {DEFAULT})")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    ctid = v.int_arg(1, v.MAX_CTID)
    sub.add_parser("run", help="the daemon (inotify and an hourly scan feed borg)")
    sub.add_parser("status", help="per CT: newest restore point, its age, OK/LATE/NEVER")
    p = sub.add_parser("list", help="a CT's restore points")
    p.add_argument("ctid", type=ctid)
    p = sub.add_parser("restore", help="a CT's /data as it was at a restore point")
    p.add_argument("ctid", type=ctid)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--at", type=when, help="the newest point at or before this time (default: the newest)")
    which.add_argument("--archive", help="this restore point (ctbackup list)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", metavar="DIR", help="into DIR/<CTID> (must not exist)")
    where.add_argument("--in-place", action="store_true", help="replace the CT's folder (the CT must be stopped)")
    sub.add_parser("verify", help="re-read every chunk; find archives deleted behind our back")
    p = sub.add_parser("prune", help="remove restore points older than --keep-within and free their space "
                                     "(a config with the prune key: the storage node's key cannot)")
    p.add_argument("--keep-within", required=True, metavar="AGE", help="e.g. 30d (H, d, w, m, y)")
    p = sub.add_parser("hook", help="inside a CT: ask for a pre-backup hook and run CMD for each backup "
                                    "(at most every hook_every; needs no config)")
    p.add_argument("--data", default="/data", help="the CT's /data (default /data)")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD", help="the hook, e.g. -- pg_dump -f dump.sql")
    return top


COMMANDS = {"run": cmd_run, "status": cmd_status, "list": cmd_list, "restore": cmd_restore, "verify": cmd_verify,
            "prune": cmd_prune}


def cmd_hook(args: argparse.Namespace) -> int:
    cmd = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not cmd:
        print(json.dumps({"ok": False, "error": "give the hook after --, e.g. ctbackup hook -- pg_dump -f d.sql"}))
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    _log(f"pre-backup hook for {args.data}: {' '.join(cmd)}")
    hook.serve(Path(v.path(args.data, "--data")), cmd, stop.is_set, _log)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("run", "hook"):
        _log_setup()
    if args.command == "hook":  # inside a CT: no config, nothing of the storage node
        try:
            return cmd_hook(args)
        except (CtmError, OSError) as exc:
            print(json.dumps({"ok": False, "error": str(exc)}))
            return 2 if isinstance(exc, InputError) else 1
    try:
        cfg = load(Path(v.path(args.config or os.environ.get(ENV_VAR) or DEFAULT, "--config")))
        out = COMMANDS[args.command](cfg, args)
    except (CtmError, ValueError, KeyError, OSError) as exc:  # one JSON line, never a traceback
        message = str(exc) if not isinstance(exc, OSError) else f"{exc.filename or ''}: {exc.strerror or exc}"
        print(json.dumps({"ok": False, "error": message}))
        return 2 if isinstance(exc, InputError) else 1
    if args.command != "run":
        print(json.dumps({"ok": True, **out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
