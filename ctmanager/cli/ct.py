"""`ctmanager ct add|set|rm|list|show|move|exec`: containers."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..dc.model import rack_name
from ..errors import InputError
from ..store import queries
from .common import (
    Registry,
    app_list,
    editing,
    installed_rack,
    integer,
    integer_in,
    manager_setup,
    overrides,
    parse_rack,
    resource_args,
    seconds_in,
    store_of,
    want_json,
    with_config,
)
from .output import emit_json, table, when


def register(reg: Registry) -> None:
    cts = reg.group("ct", "containers (CTs)")
    p = reg.cmd(cts, "add", cmd_ct_add, "add a CT (IP and CTID are allocated)",
                "ctmanager ct add build-101-1 --rack rack-101 --memory 4G --apps bamboo")
    p.add_argument("hostname", help="hostname (a DNS label, unique in the DC)")
    p.add_argument("--rack", required=True, help="rack (rack-101 or 101)")
    p.add_argument("--tenant", help="tenant the CT belongs to (must live in the same rack)")
    p.add_argument("--env", help="software environment for /sw (default: the DC's first)")
    p.add_argument("--admst", default="up", choices=("up", "down"), help="administrative state (default: up)")
    p.add_argument("--ctid", type=integer, help="explicit CTID (default: next free, never reused)")
    p.add_argument("--apps", default="", help="comma-separated apps")
    resource_args(p)
    p = reg.cmd(cts, "set", cmd_ct_set, "change a CT's ADMST, resources, apps or environment",
                "ctmanager ct set myhost --admst down")
    p.add_argument("ct", help="CTID or hostname")
    p.add_argument("--admst", choices=("up", "down"))
    p.add_argument("--env")
    p.add_argument("--apps", help="comma-separated apps (replaces the list)")
    resource_args(p)
    p = reg.cmd(cts, "reset", cmd_ct_reset,
                "clear a CT's crash loop: the manager starts it again and counts its crashes from zero",
                "ctmanager ct reset acme     # after fixing what made it crash (see: ctmanager status)")
    p.add_argument("ct", help="CTID or hostname")
    p = reg.cmd(cts, "rm", cmd_ct_rm,
                "remove a CT (refused while a route points at it); the reconcile loop destroys it, keeping /data",
                "ctmanager ct rm build-101-1")
    p.add_argument("ct", help="CTID or hostname")
    p.add_argument("--purge-data", action="store_true", help="also delete its /data when it is destroyed")
    p = reg.cmd(cts, "list", cmd_ct_list, "list CTs with their configuration", "ctmanager ct list --rack rack-101")
    p.add_argument("--rack")
    p.add_argument("--tenant")
    p = reg.cmd(cts, "show", cmd_ct_show, "show one CT", "ctmanager ct show 1005 --json")
    p.add_argument("ct", help="CTID or hostname")
    p = reg.cmd(cts, "history", cmd_ct_history, "the actions the managers took on a CT (the journal, newest last): "
                "when, what, where, why, the outcome, and the lease epoch it was decided in",
                "ctmanager ct history acme --limit 5")
    p.add_argument("ct", help="CTID or hostname")
    p.add_argument("--limit", type=integer_in(1, 10000), default=20, help="how many (default 20)")
    p = reg.cmd(cts, "move", cmd_ct_move, "move a CT to another HN (stopped there first: a CT never runs twice)",
                "ctmanager ct move 1005 --to hn-101-2")
    p.add_argument("ct", help="CTID or hostname")
    p.add_argument("--to", required=True, metavar="HN")
    p = with_config(reg.cmd(cts, "exec", cmd_ct_exec,
                            "run a command inside a CT through its HN's agent; exit code passed through",
                            "ctmanager ct exec myhost -- svstat /data/service/httpd"))
    p.add_argument("ct", help="CTID or hostname")
    p.add_argument("--timeout", type=seconds_in(0.1, 86400), default=None, metavar="S",
                   help="give up on the command after S seconds (default: the config's [ssh] action_timeout)")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="-- CMD ARGS...")


def ct_json(ct: Any) -> dict[str, Any]:
    from ..dc import resources

    return {"ctid": ct.ctid, "hostname": ct.hostname, "rack": rack_name(ct.rack), "tenant": ct.tenant,
            "service": ct.service, "env": ct.env, "ip": ct.ip, "storage": ct.storage, "admst": ct.admst,
            **resources.as_dict(ct.resources), "apps": list(ct.apps)}

def cmd_ct_add(args: argparse.Namespace) -> int:
    from ..dc import resources

    slot = parse_rack(args.rack)
    with editing(args) as (store, inv):
        res = resources.with_overrides(inv.dc.defaults, inv.dc.max_compute, overrides(args), "ct")
        ct = inv.add_ct(args.hostname, slot, resources=res, tenant=args.tenant, env=args.env,
                        admst=args.admst, apps=app_list(args.apps) or [], ctid=args.ctid)
    if want_json(args):
        emit_json(ct_json(ct))
    else:
        print(f"added CT {ct.ctid} {ct.hostname} {ct.ip} in {rack_name(ct.rack)} (ADMST {ct.admst})")
    return 0

def cmd_ct_set(args: argparse.Namespace) -> int:
    from ..dc import resources

    if args.admst is None and args.env is None and args.apps is None and not overrides(args):
        raise InputError(f"nothing to change for {args.ct}: give --admst, --env, --apps or a resource "
                         "(--memory, --swap, --disk, --cpus, --cpuunits, --cpulimit)")
    with editing(args) as (store, inv):
        current = queries.find_ct(store, args.ct)
        res = resources.with_overrides(current.resources, inv.dc.max_compute, overrides(args), "ct")
        ct = inv.set_ct(args.ct, resources=res, admst=args.admst, apps=app_list(args.apps), env=args.env)
    if want_json(args):
        emit_json(ct_json(ct))
    else:
        print(f"updated CT {ct.ctid} {ct.hostname} (ADMST {ct.admst})")
    return 0

def cmd_ct_reset(args: argparse.Namespace) -> int:
    from .output import when

    with editing(args) as (_store, inv):
        ct, cleared = inv.reset_ct(args.ct)
    if want_json(args):
        emit_json({"ctid": ct.ctid, "hostname": ct.hostname, "cleared": cleared is not None,
                   "crashes": None if cleared is None else cleared[0],
                   "since": None if cleared is None else when(cleared[1])})
    elif cleared is None:
        print(f"CT {ct.ctid} {ct.hostname}: not in a crash loop; nothing to clear")
    else:
        then = "the manager starts it again" if ct.admst == "UP" else "it stays down: its ADMST is DOWN"
        print(f"CT {ct.ctid} {ct.hostname}: crash loop cleared ({cleared[0]} crashes, left down since "
              f"{when(cleared[1])}); {then}")
    return 0

def cmd_ct_rm(args: argparse.Namespace) -> int:
    with editing(args) as (store, inv):
        ct = inv.rm_ct(args.ct, purge=args.purge_data)
        grace = inv.dc.ip_quarantine
    if want_json(args):
        emit_json({"removed": ct.ctid, "hostname": ct.hostname, "ip": ct.ip, "ip_quarantine": grace})
    else:
        print(f"removed CT {ct.ctid} {ct.hostname}; {quarantine_note([ct], grace)}")
    return 0


def quarantine_note(cts: list[Any], grace: float) -> str:
    """What `ct rm` and `tenant rm` say of the addresses they freed (operations/rules.leave_rack)."""
    ips = ", ".join(c.ip for c in cts)
    racks = ", ".join(sorted({rack_name(c.rack) for c in cts}))
    return (f"address {ips} not handed out again until every HN of {racks} reported it gone, or for "
            f"{grace:g} s ([ipam] quarantine)")

def cmd_ct_list(args: argparse.Namespace) -> int:
    from ..validate import format_size

    with store_of(args) as store:
        rack = installed_rack(store, args.rack) if args.rack else None
        if args.tenant:
            queries.tenant_rack(store, args.tenant)  # an unknown tenant is an error, not an empty list
        cts = queries.cts(store, rack=rack, tenant=args.tenant)
    if want_json(args):
        emit_json([ct_json(c) for c in cts])
    else:
        table(("CTID", "HOSTNAME", "RACK", "TENANT", "SERVICE", "IP", "ADMST", "MEM", "DISK", "CPUS", "APPS"),
              [(c.ctid, c.hostname, rack_name(c.rack), c.tenant, c.service, c.ip, c.admst,
                format_size(c.resources.memory), format_size(c.resources.disk), c.resources.cpus, c.apps) for c in cts])
    return 0

def cmd_ct_show(args: argparse.Namespace) -> int:
    with store_of(args) as store:
        data = ct_json(queries.find_ct(store, args.ct))
    if want_json(args):
        emit_json(data)  # sizes in bytes, for programs
    else:
        from ..validate import format_size

        width = max(map(len, data))
        for k, v in data.items():
            if k in SIZES and isinstance(v, int):
                v = format_size(v)  # as `ct list` says them (3G)
            print(f"{k:<{width}}  {', '.join(v) if isinstance(v, list) else ('-' if v is None else v)}")
    return 0


SIZES = ("memory", "swap", "disk")

def cmd_ct_history(args: argparse.Namespace) -> int:
    with store_of(args) as store:
        ct = queries.find_ct(store, args.ct)
        rows = queries.ct_history(store, ct.ctid, args.limit)
    if want_json(args):
        emit_json([{**r, "at": when(r["at"]), "finished_at": when(r["finished_at"])} for r in rows])
    elif not rows:
        print(f"no action recorded for CT {ct.ctid} {ct.hostname} (finished ones are kept for the retention's "
              "journal_days)")
    else:
        table(("AT", "KIND", "HN", "REASON", "STATE", "DETAIL", "EPOCH"),
              [(when(r["at"]), r["kind"], r["hn"], r["reason"], r["state"], r["detail"] or None, r["epoch"] or None)
               for r in rows])
    return 0


def cmd_ct_move(args: argparse.Namespace) -> int:
    from ..operations.inventory import Inventory
    with store_of(args) as store:
        with store.transaction():
            ct, old = Inventory(store, queries.dc_template(store)).move_ct(args.ct, args.to)
    if want_json(args):
        emit_json({"ctid": ct.ctid, "from": old, "to": args.to})
    else:
        print(f"CT {ct.ctid} {ct.hostname}: not placed on any HN yet (nothing to stop): it starts on {args.to}"
              if old is None else f"CT {ct.ctid} {ct.hostname}: {old} -> {args.to} (stopped there first, then "
              "started here)")
    return 0

def cmd_ct_exec(args: argparse.Namespace) -> int:
    from ..manager import passes, reach

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if argv is args.argv and argv and argv[0].startswith("-"):  # everything after the CT is the command
        raise InputError(f"{argv[0]!r} after the CT would run in it: options go before the CT, and the command "
                         f"after --, e.g. ctmanager ct exec --timeout 60 {args.ct} -- uptime")
    if not argv:
        raise InputError("give the command after --, e.g. ctmanager ct exec myhost -- uptime")
    config, store, _dc = manager_setup(args)
    try:
        # the CT's rack and its HNs from the store: any rack's CT, whichever rack's config was given
        ct = queries.find_ct(store, args.ct)
        cfg = reach.rack_config(config, ct.rack)
        executor = passes.executor_for(store, cfg)
        try:
            up, unreachable = reach.running_on(store, cfg, ct, lambda hn: reach.observe(executor, cfg, hn))
            if not up:
                why = "; ".join(f"{hn}: {msg}" for hn, msg in sorted(unreachable.items()))
                raise InputError(f"CT {ct.ctid} {ct.hostname} is not running on any reachable HN of "
                                 f"{rack_name(ct.rack)}{f' (unreachable: {why})' if why else ''} "
                                 "(see: ctmanager status)")
            out = executor.hn(up[0]).run([*cfg.agent_command, "exec", str(ct.ctid), "--", *argv], b"",
                                         args.timeout or cfg.action_timeout)
        finally:
            executor.close()
    finally:
        store.close()
    sys.stdout.buffer.write(out.out)
    sys.stderr.buffer.write(out.err)
    return out.rc
