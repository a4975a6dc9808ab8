"""`ctmanager backup status|list|restore|verify`: every CT's /data, backed up
continuously by ctbackup on its storage node (backupnode/), read and restored
here over SSH with the manager config's key and pinned host keys."""

from __future__ import annotations

import argparse
import time
from typing import Any

from .. import validate as v
from ..dc.model import rack_name
from ..errors import CtmError, InputError, NotFoundError
from ..store import lease as leases
from ..store import queries
from .common import Registry, editing, installed_rack, manager_setup, seconds_in, want_json, with_config
from .output import age, emit_json, table, when

RESTORE_HELP = ("restore a CT's /data as it was at a restore point: --to DIR on its storage node, or --in-place "
                "(the CT is stopped through its rack's manager, restored, and started again)")


def register(reg: Registry) -> None:
    g = reg.group("backup", "continuous backups of every CT's /data (ctbackup on the storage nodes)")
    p = with_config(reg.cmd(g, "status", cmd_status, "per CT: the newest restore point, its age, OK/LATE/ALARM/"
                            "NEVER against the RPO; per storage node: repository, size, daemon, errors",
                            "ctmanager backup status --rack rack-101"))
    p.add_argument("--rack", help="this rack's storage nodes (default: the manager config's rack)")
    p = with_config(reg.cmd(g, "list", cmd_list, "a CT's restore points, oldest first", "ctmanager backup list acme"))
    p.add_argument("ct", help="CTID or hostname")
    p = with_config(reg.cmd(g, "restore", cmd_restore, RESTORE_HELP,
                            "ctmanager backup restore acme --at 2026-12-03T07:41:00Z --in-place"))
    p.add_argument("ct", help="CTID or hostname")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--at", metavar="TIME", help="the newest restore point at or before TIME (2026-12-03T07:41:00Z "
                       "or epoch seconds; default: the newest)")
    which.add_argument("--archive", metavar="NAME", help="this restore point (see: ctmanager backup list CT)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", metavar="DIR", help="into DIR/<CTID> on the CT's storage node (DIR/<CTID> must not "
                       "exist); the CT runs on, untouched")
    where.add_argument("--in-place", action="store_true", help="replace the CT's /data: stop it, restore, start it")
    p.add_argument("--timeout", type=seconds_in(1, 86400), default=120.0,
                   help="--in-place: seconds the CT may take to stop, and again to be UP (default 120)")
    p = with_config(reg.cmd(g, "verify", cmd_verify, "re-read every restore point's data (borg check --verify-data) "
                            "and find restore points deleted behind the storage node's back",
                            "ctmanager backup verify --rack rack-101"))
    p.add_argument("--rack", help="this rack's storage nodes (default: the manager config's rack)")


def _nodes(args: argparse.Namespace) -> tuple[Any, Any, int]:
    from ..manager.passes import backups_for

    config, store, _dc = manager_setup(args)
    try:
        rack = installed_rack(store, args.rack) if getattr(args, "rack", None) else config.slot
    except BaseException:
        store.close()
        raise
    return store, backups_for(store, config, rack), rack


def cmd_status(args: argparse.Namespace) -> int:
    store, nodes, rack = _nodes(args)
    try:
        names = {c.ctid: c for c in queries.cts(store, rack=rack)}
        out, failed = [], 0
        for node in sorted(nodes.addresses):
            try:
                out.append({"node": node, **nodes.status(node)})
            except CtmError as exc:
                failed += 1
                out.append({"node": node, "ok": False, "error": str(exc), "cts": []})
    finally:
        nodes.close()
        store.close()
    for o in out:
        o["cts"] = [{**c, "hostname": names[c["ctid"]].hostname, "tenant": names[c["ctid"]].tenant,
                     "at": when(c["at"]), "epoch": c["at"],
                     "state": "ALARM" if c["alarm"] and c["state"] != "NEVER" else c["state"]}
                    for c in o["cts"] if c["ctid"] in names]
    if want_json(args):
        emit_json({"rack": rack_name(rack), "nodes": out})
        return 1 if failed else 0
    if not out:
        print(f"{rack_name(rack)} has no storage node")
    for o in out:
        if o.get("ok") is False:
            print(f"{o['node']}: cannot read its backups: {o['error']}")
            continue
        daemon = "daemon running" if o["daemon"] else "DAEMON NOT RUNNING"
        trouble = f"; REPOSITORY FAILS since {when(o['error_since'])}: {o['error']}" if o["error"] else ""
        print(f"{o['node']}: {o['repository']}, {_size(o['repository_bytes'])}, RPO {o['rpo']} s, {daemon}{trouble}")
    rows = [(c["ctid"], c["hostname"], c["tenant"], o["node"], c["at"], age(c["age"]), c["state"])
            for o in out for c in o["cts"]]
    if rows:  # AT: the newest restore point's time (its archive: backup list CT)
        table(("CTID", "HOSTNAME", "TENANT", "NODE", "NEWEST", "AGE", "STATE"), rows)
    return 1 if failed else 0


def _size_or_none(n: int | None) -> str | None:
    return None if n is None else _size(n)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _ct_and_node(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from ..manager.passes import backups_for

    config, store, _dc = manager_setup(args)
    ct = queries.find_ct(store, args.ct)
    if not ct.storage:
        store.close()
        raise NotFoundError(f"CT {ct.ctid} {ct.hostname} has no storage node")
    return store, backups_for(store, config, ct.rack), ct


def cmd_list(args: argparse.Namespace) -> int:
    store, nodes, ct = _ct_and_node(args)
    try:
        points = nodes.points(ct.storage, ct.ctid)
    finally:
        nodes.close()
        store.close()
    if want_json(args):
        emit_json({"ctid": ct.ctid, "hostname": ct.hostname, "node": ct.storage,
                   "points": [{**p, "at": when(p["at"]), "epoch": p["at"]} for p in points]})
    elif not points:
        print(f"CT {ct.ctid} {ct.hostname}: no restore point yet on {ct.storage}")
    else:
        # one archive holds every CT that changed in its cycle: FILES and sizes are the whole archive's
        table(("ARCHIVE", "AT", "FILES", "READ", "NEW"),
              [(p["archive"], when(p["at"]), p.get("files"), _size_or_none(p.get("read_bytes")),
                _size_or_none(p.get("new_bytes"))) for p in points])
    return 0


def _pick(points: list[dict[str, Any]], ct: Any, at: float | None, archive: str | None) -> dict[str, Any]:
    if archive is not None:
        found = [p for p in points if p["archive"] == archive]
        if not found:
            raise InputError(f"CT {ct.ctid} has no restore point {archive!r} (ctmanager backup list {ct.hostname})",
                             where="--archive")
        return found[0]
    mine = [p for p in points if at is None or float(p["at"]) <= at]
    if not mine:
        raise InputError(f"CT {ct.ctid} {ct.hostname} has no restore point"
                         f"{'' if at is None else ' at or before ' + str(when(at))} (ctmanager backup list "
                         f"{ct.hostname})", where="--at")
    return max(mine, key=lambda p: float(p["at"]))


def cmd_restore(args: argparse.Namespace) -> int:
    from ..backupnode.cli import when as parse_when

    try:
        at = parse_when(args.at) if args.at else None
    except argparse.ArgumentTypeError as exc:
        raise InputError(str(exc), where="--at") from None
    to = v.path(args.to, "--to") if args.to else None
    store, nodes, ct = _ct_and_node(args)
    try:
        chosen = _pick(nodes.points(ct.storage, ct.ctid), ct, at, args.archive)
        if to is not None:
            got = nodes.restore(ct.storage, ct.ctid, archive=chosen["archive"], to=to)
            stopped = False
        else:
            stopped = _stop(args, store, ct)
            try:
                got = nodes.restore(ct.storage, ct.ctid, archive=chosen["archive"])
            finally:
                if stopped:
                    _start(args, store, ct)
    finally:
        nodes.close()
        store.close()
    out = {"ctid": ct.ctid, "hostname": ct.hostname, "node": ct.storage, "archive": chosen["archive"],
           "at": when(chosen["at"]), "path": got["path"], "in_place": to is None, "restarted": stopped}
    if want_json(args):
        emit_json(out)
    else:
        print(f"restored CT {ct.ctid} {ct.hostname} as of {out['at']} ({chosen['archive']}) into {got['path']} on "
              f"{ct.storage}" + ("; started again" if stopped else ""))
    return 0


def _opst(store: Any, ctid: int) -> tuple[str, float | None]:
    row = next(r for r in queries.status(store) if r[0] == ctid)
    return str(row[6]), row[8]


def _stop(args: argparse.Namespace, store: Any, ct: Any) -> bool:
    """Stop the CT through its rack's manager (ADMST DOWN) and wait until its HN says
    it is down; False if it was down already (it is left down)."""
    if ct.admst != "UP":
        return False
    if ct.rack not in leases.leaders(store):
        raise InputError(f"{rack_name(ct.rack)} has no leading manager to stop CT {ct.ctid} (ctmanager manager "
                         "status); nothing changed")
    with editing(args) as (_s, inv):
        inv.set_ct(str(ct.ctid), admst="down")
    _say(args, f"CT {ct.ctid} {ct.hostname}: stopping it through {rack_name(ct.rack)}'s manager")
    deadline = time.monotonic() + args.timeout
    while True:
        opst, report_age = _opst(store, ct.ctid)
        if opst == "DOWN" and report_age is not None and report_age < 3:
            return True
        if time.monotonic() > deadline:
            with editing(args) as (_s, inv):
                inv.set_ct(str(ct.ctid), admst="up")
            raise InputError(f"CT {ct.ctid} {ct.hostname} did not stop within {args.timeout:g} s (OPST {opst}); "
                             "started again, nothing restored")
        time.sleep(0.2)


def _start(args: argparse.Namespace, store: Any, ct: Any) -> None:
    with editing(args) as (_s, inv):
        inv.set_ct(str(ct.ctid), admst="up")
    _say(args, f"CT {ct.ctid} {ct.hostname}: starting it again")
    deadline = time.monotonic() + args.timeout
    while _opst(store, ct.ctid)[0] != "UP":
        if time.monotonic() > deadline:
            raise InputError(f"CT {ct.ctid} {ct.hostname} is not UP {args.timeout:g} s after the restore "
                             "(see: ctmanager status)")
        time.sleep(0.2)


def _say(args: argparse.Namespace, line: str) -> None:
    if not want_json(args):
        print(line, flush=True)


def cmd_verify(args: argparse.Namespace) -> int:
    store, nodes, rack = _nodes(args)
    out, bad = [], 0
    try:
        for node in sorted(nodes.addresses):
            _say(args, f"{node}: verifying (borg check --verify-data re-reads every chunk)...")
            try:
                got = nodes.verify(node)
                out.append({"node": node, "ok": True, **got})
            except CtmError as exc:
                bad += 1
                out.append({"node": node, "ok": False, "error": str(exc)})
    finally:
        nodes.close()
        store.close()
    if want_json(args):
        emit_json({"rack": rack_name(rack), "nodes": out})
    else:
        for o in out:
            print(f"{o['node']}: " + (f"{o['archives']} restore points verified" if o["ok"] else f"FAILED: {o['error']}"))
    return 1 if bad else 0

