"""`ctmanager init`, `render`, `status`: the DC as a whole."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import NotFoundError, StoreError
from ..store import default_path, open_store, queries
from ..store.backends import discard_new, is_new
from ..store.db import redact
from .common import Registry, out_path, parse_rack, positive, store_of, want_json
from .output import age, emit_json, table, when


def register(reg: Registry) -> None:
    p = reg.cmd(reg.sub, "init", cmd_init, "create the store from a DC template (and install the racks and tenants it lists)",
                "ctmanager init example            # the example DC shipped with ctmanager")
    p.add_argument("template", help="a DC template file, or the name of one on the template search path (e.g. example)")


def register_views(reg: Registry) -> None:
    p = reg.cmd(reg.sub, "render", cmd_render,
                "render every CT's OpenVZ/LXC/resolv.conf files and storage exports into OUTDIR",
                "ctmanager render /srv/ctconf --diff     # show what would change, write nothing")
    p.add_argument("outdir", type=out_path)
    p.add_argument("--diff", action="store_true", help="print a unified diff of what would change; write nothing")
    p.add_argument("--workers", type=positive, help="render processes (default: the CPUs this process may use)")

    p = reg.cmd(reg.sub, "status", cmd_status, "CTID | HOSTNAME | TENANT | IP | HN | ADMST | OPST | SINCE | REPORT_AGE | "
            "CRASH_LOOP | MANAGER for every CT (OPST is UNKNOWN when its HN's last report is older than the manager's "
            "stale_after; CRASH_LOOP: the manager leaves it down until: ctmanager ct reset CT; MANAGER: the one "
            "leading the CT's rack)",
            "ctmanager status --json | jq '.[] | select(.opst != \"UP\")'")
    p.add_argument("--rack", help="only this rack's CTs (rack-101 or 101; default: every rack of the DC)")


def cmd_init(args: argparse.Namespace) -> int:
    from ..operations import inventory
    from ..paths import find_dc_template

    path = find_dc_template(args.template)
    store_path = default_path(getattr(args, "store", None))
    plan = inventory.prepare_init(path)  # validates template + manifests before the store exists
    created = is_new(store_path)
    try:
        with open_store(store_path, create=True) as store, store.transaction():
            dc = inventory.apply_init(store, plan)
            summary: dict[str, Any] = {"store": redact(store_path), "dc": dc.name, "template": str(path),
                       "racks": [r["name"] for r in queries.racks(store)], "cts": len(queries.cts(store))}
    except BaseException:
        if created:  # leave no half-made store behind
            discard_new(store_path)
        raise
    if want_json(args):
        emit_json(summary)
    else:
        print(f"initialised DC {summary['dc']} in {summary['store']} from {path}: racks {', '.join(summary['racks']) or '(none)'}, {summary['cts']} CTs")
    return 0

def cmd_render(args: argparse.Namespace) -> int:
    from ..render.tree import render_tree

    outdir = Path(args.outdir)
    with store_of(args) as store:
        report = render_tree(store, outdir, diff=args.diff, workers=args.workers)
    if want_json(args):
        emit_json({"outdir": str(outdir), "dry_run": args.diff, **report.as_dict(),
                   **({"diff": report.diff} if args.diff else {})})
        return 0
    if args.diff:
        sys.stdout.write(report.diff)
        print(f"{len(report.written)} file(s) would change, {len(report.removed)} would be removed, {report.unchanged} unchanged")
    else:
        print(f"rendered into {outdir}: {len(report.written)} written, {len(report.removed)} removed, {report.unchanged} unchanged")
    return 0

def _backup_cell(b: tuple[str, float | None] | None) -> str | None:
    """OK 12s, ALARM 3m, NEVER; None: no storage node's backups read yet."""
    if b is None:
        return None
    return b[0] if b[1] is None else f"{b[0]} {age(b[1])}"


def cmd_status(args: argparse.Namespace) -> int:
    with store_of(args) as store:
        if not queries.initialised(store):
            raise StoreError(f"{store.where}: store is not initialised; run: ctmanager init TEMPLATE")
        rack = parse_rack(args.rack, "--rack") if args.rack else None
        if rack is not None and not any(r["slot"] == rack for r in queries.racks(store)):
            raise NotFoundError(f"no rack-{rack} installed (ctmanager rack list)", where="--rack")
        rows = queries.status(store, rack=rack)
    if want_json(args):
        keys = queries.STATUS_FIELDS
        out = [dict(zip(keys, r)) for r in rows]
        for d in out:
            d["since"] = when(d["since"])
            if d["crash_loop"] is not None:
                d["crash_loop"] = {"crashes": d["crash_loop"][0], "since": when(d["crash_loop"][1])}
            if d["backup"] is not None:
                d["backup"] = {"state": d["backup"][0], "age": d["backup"][1]}
        emit_json(out)
    else:
        # CRASH_LOOP: the manager leaves that CT down (OPST DOWN) until `ctmanager ct reset CT`.
        # BACKUP: its newest restore point against the RPO (ALARM past 2 x RPO), as its rack's leader last read it.
        table(tuple(k.upper() for k in queries.STATUS_FIELDS),
              [(*r[:7], when(r[7]), age(r[8]), None if r[9] is None else f"{r[9][0]} crashes", r[10],
                _backup_cell(r[11])) for r in rows])
    return 0
