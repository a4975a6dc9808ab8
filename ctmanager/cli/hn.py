"""`ctmanager hn list|drain|undrain`: hypervisor nodes."""

from __future__ import annotations

import argparse
from typing import Any

from ..store import lease as leases
from ..store import queries
from ..validate import format_size
from .common import Registry, installed_rack, store_of, want_json
from .output import age, emit_json, table


def register(reg: Registry) -> None:
    hns = reg.group("hn", "hypervisor nodes: reports, drain")
    p = reg.cmd(hns, "list", cmd_hn_list, "HNs with last report age, CT count, metrics, drain flag and the "
                "manager leading their rack",
                "ctmanager hn list")
    p.add_argument("--rack", help="only this rack (rack-101 or 101)")
    p = reg.cmd(hns, "drain", cmd_hn_drain, "move every CT off an HN and place nothing new there",
                "ctmanager hn drain hn-101-1")
    p.add_argument("hn")
    p = reg.cmd(hns, "undrain", cmd_hn_undrain, "let the scheduler use a drained HN again",
                "ctmanager hn undrain hn-101-1")
    p.add_argument("hn")


def cmd_hn_list(args: argparse.Namespace) -> int:
    from ..wire.reports import ReportError, parse_body

    with store_of(args) as store:
        now = store.now()  # report ages on the store's clock, as they were stamped
        rack = None
        if args.rack:
            rack = installed_rack(store, args.rack)
        reports = queries.hn_reports(store)
        leaders = leases.leaders(store)
        rows: list[dict[str, Any]] = []
        for n in queries.nodes(store, rack=rack):
            if n.role != "compute":
                continue
            r = reports.get(n.hostname)
            rep = None
            if r is not None:
                try:
                    rep = parse_body(r[1])
                except ReportError:
                    rep = None
            m = rep.metrics if rep else None
            rows.append({
                "hn": n.hostname, "ip": n.ip, "drained": n.drained or bool(rep and rep.drained),
                "report_age": None if r is None else round(now - r[0], 1),
                "cts": None if rep is None else sum(1 for c in rep.cts if c.opst == "UP"),
                "mem_free": m and m.mem_free, "disk_free": m and m.disk_free, "cpu_load": m and m.cpu_load,
                "manager": leaders[n.rack][0] if n.rack in leaders else None,
                "version": (rep.sw or None) if rep else None,  # the agent's (None: older than 0.1, or no report)
            })
    if want_json(args):
        emit_json(rows)
    else:
        table(("HN", "IP", "REPORT_AGE", "CTS_UP", "MEM_FREE", "DISK_FREE", "LOAD", "DRAINED", "VERSION", "MANAGER"), [
            (r["hn"], r["ip"], age(r["report_age"]) if r["report_age"] is not None else "never", r["cts"],
             format_size(r["mem_free"]) if r["mem_free"] is not None else None,
             format_size(r["disk_free"]) if r["disk_free"] is not None else None, r["cpu_load"],
             "yes" if r["drained"] else "no", r["version"], r["manager"]) for r in rows])
    return 0

def _set_drain(args: argparse.Namespace, drained: bool) -> int:
    from ..operations.inventory import Inventory
    with store_of(args) as store:
        with store.transaction():
            Inventory(store, queries.dc_template(store)).set_drained(args.hn, drained)
            node = queries.compute_node(store, args.hn)
            # the scheduler moves a drained HN's CTs only to another HN that takes CTs: none left, they stay
            stay = drained and not any(n.role == "compute" and not n.drained and n.hostname != args.hn
                                       for n in queries.nodes(store, rack=node.rack))
    if want_json(args):
        emit_json({"hn": args.hn, "drained": drained, **({"cts_stay": stay} if drained else {})})
    elif stay:
        print(f"{args.hn} drained: nothing new is placed on it, but no other HN of rack-{node.rack} takes CTs, "
              "so its CTs stay where they are (nothing to move them to; undrain or add an HN)")
    else:
        print(f"{args.hn} {'drained: its CTs move away' if drained else 'undrained: the scheduler may use it again'}")
    return 0

def cmd_hn_drain(args: argparse.Namespace) -> int:
    return _set_drain(args, True)

def cmd_hn_undrain(args: argparse.Namespace) -> int:
    return _set_drain(args, False)
