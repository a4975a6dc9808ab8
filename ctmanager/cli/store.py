"""`ctmanager store ...`: the store itself (SQLite file or PostgreSQL): copy,
version, migrate, backup, restore."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from ..store import archive, default_path, upgrade
from ..store import copy as storecopy
from ..store.db import Locator, parse_locator, redact
from ..store.versions import FLOOR_AWARE, MIGRATE_HINT, Schema
from .common import Registry, want_json
from .output import emit_json, table

STATES = {
    "current": "current: nothing to migrate",
    "older": f"older than this ctmanager: {MIGRATE_HINT}",
    "newer": "newer than this ctmanager and backward compatible with it: usable",
    "incompatible": "newer than this ctmanager and not backward compatible with it: upgrade ctmanager",
}


def register(reg: Registry) -> None:
    g = reg.group("store", "the store itself: an SQLite file or a PostgreSQL database")
    p = reg.cmd(g, "copy", cmd_store_copy, "copy a whole store into a new one, either backend (ids kept)",
                "ctmanager store copy /var/lib/ctmanager/ctmanager.db 'postgresql://ctm@db1/ctmanager'")
    p.add_argument("src", metavar="SRC", help="the store to copy: a file path or a postgresql:// URL")
    p.add_argument("dst", metavar="DST", help="a new file, or an empty PostgreSQL database (its URL)")
    reg.cmd(g, "version", cmd_store_version,
            "the store's schema version, this ctmanager's, the oldest ctmanager schema that may use the store "
            "(its compatibility floor), and whether it needs `store migrate` (exit 0 whenever it could be read)",
            "ctmanager store version --json | jq .migrate")
    p = reg.cmd(g, "migrate", cmd_store_migrate,
                "take the store to this ctmanager's schema version, one transaction per step (the only command "
                "that changes a store's schema); refused while managers run that a step would break",
                "ctmanager store migrate --dry-run     # the steps and their compatibility; changes nothing")
    p.add_argument("--dry-run", action="store_true", help="list the steps (version, what, compatibility); "
                   "change nothing")
    p = reg.cmd(g, "backup", cmd_store_backup,
                "back up the store into FILE while managers write on (SQLite: its online backup; PostgreSQL: "
                "pg_dump, custom format); FILE is mode 0600, replaced whole or not at all",
                "ctmanager store backup /var/backups/ctmanager-$(date +%F).db")
    p.add_argument("file", metavar="FILE", type=Path, help="the backup file to write")
    p = reg.cmd(g, "restore", cmd_store_restore,
                "restore a `store backup` FILE into an empty store (no file, or an empty database); a store that "
                "holds anything is refused and left untouched",
                "mv /var/lib/ctmanager/ctmanager.db /var/lib/ctmanager/broken.db && "
                "ctmanager store restore /var/backups/ctmanager-2031-05-01.db")
    p.add_argument("file", metavar="FILE", type=Path, help="a file `ctmanager store backup` wrote")


def _progress(args: argparse.Namespace, name: str) -> Callable[[str], None]:
    def say(line: str) -> None:
        if not want_json(args):
            sys.stderr.write(f"{name}: {line}\n")
    return say


def _store(args: argparse.Namespace) -> Locator:
    return default_path(getattr(args, "store", None))


def cmd_store_copy(args: argparse.Namespace) -> int:
    src, dst = parse_locator(args.src, "SRC"), parse_locator(args.dst, "DST")
    counts = storecopy.copy(src, dst, _progress(args, "copy"))
    if want_json(args):
        emit_json({"from": redact(src), "to": redact(dst), "rows": counts})
    else:
        print(f"copied {sum(counts.values())} row(s) in {sum(1 for n in counts.values() if n)} table(s) "
              f"from {redact(src)} to {redact(dst)}")
    return 0


def _floor(schema: Schema) -> str:
    return "unknown (not recorded)" if schema.floor is None else f"{schema.floor} (ctmanager of schema " \
        f"{schema.floor} or newer may use the store)"


def cmd_store_version(args: argparse.Namespace) -> int:
    where, backend, schema = upgrade.version(_store(args))
    if want_json(args):
        emit_json({"store": where, "backend": backend, **schema.as_dict()})
        return 0
    print(f"store:           {where} ({backend})\n"
          f"store schema:    {schema.store}\n"
          f"this ctmanager:  {schema.code}\n"
          f"compatible from: {_floor(schema)}\n"
          f"state:           {STATES[schema.state]}")
    return 0


def cmd_store_migrate(args: argparse.Namespace) -> int:
    report = upgrade.migrate(_store(args), dry_run=args.dry_run, progress=_progress(args, "migrate"))
    if want_json(args):
        emit_json(report.as_dict())
        return 0
    before, after = report.before, report.after
    if not report.steps:
        what = "this ctmanager's" if before.state == "current" else "newer and backward compatible"
        print(f"store {report.where} is at schema {before.store} ({what}): nothing to migrate")
        return 0
    if not report.dry_run:
        print(f"migrated {report.where} from schema {before.store} to {after.store} ({len(report.steps)} step(s)); "
              f"ctmanager of schema {report.floor_after} or newer may use it")
        return 0
    print(f"store {report.where} is at schema {before.store}; this ctmanager's is {before.code}: "
          f"{len(report.steps)} step(s), nothing changed (dry run):")
    table(("VERSION", "WHAT", "COMPATIBILITY"),
          [(s.version, s.what, f"backward compatible (code of schema {s.compatible_with}+ works on it)"
            if s.compatible_with < s.version else "NOT backward compatible (code of this schema only)")
           for s in report.steps])
    if report.rolling:
        print(f"after it, ctmanager of schema {report.floor_after} or newer may use the store, so the managers of "
              f"schema {before.store} run on through it: migrate, then upgrade the standby managers, the leaders, "
              "the agents")
        if before.store < FLOOR_AWARE:
            print(f"but a ctmanager of schema {before.store} knows no compatibility floor: one that restarts after the "
                  "migrate (a crash, a reboot, Restart=always) refuses the newer store until it is upgraded; "
                  "upgrade each manager and ctmailmap soon after")
    else:
        running = f"; running now: {', '.join(report.running)}" if report.running else ""
        print(f"after it, only ctmanager of schema {report.floor_after} or newer may use the store: stop every "
              f"manager first (the CTs keep running), migrate, then start the upgraded ones{running}")
    return 0


def cmd_store_backup(args: argparse.Namespace) -> int:
    done = archive.backup(_store(args), args.file, _progress(args, "backup"))
    if want_json(args):
        emit_json(done.as_dict())
    else:
        print(f"backed up {done.store} ({done.backend}, schema {done.schema}) into {done.file}: "
              f"{archive.size(done.bytes)} in {done.seconds:.1f}s")
    return 0


def cmd_store_restore(args: argparse.Namespace) -> int:
    done, schema = archive.restore(_store(args), args.file, _progress(args, "restore"))
    if want_json(args):
        emit_json({**done.as_dict(), **{k: v for k, v in schema.as_dict().items() if k != "schema"}})
        return 0
    print(f"restored {done.file} ({done.backend}, schema {done.schema}) into {done.store} in {done.seconds:.1f}s; "
          f"the store is {STATES[schema.state]}")
    if done.backend == "postgresql":
        print("grants were not restored: grant read-only roles again (GRANT SELECT ON ALL TABLES IN SCHEMA "
              "public TO ROLE)")
    return 0
