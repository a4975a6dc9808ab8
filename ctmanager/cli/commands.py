"""Subcommands: registration (with --help examples) and handlers."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import queries
from ..errors import CtmError, StoreError
from ..model import rack_name
from ..store import Store, default_path, open_store
from .output import age, emit_json, table, when

RES_OPTS = ("memory", "swap", "disk", "cpus", "cpuunits", "cpulimit")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> dict[str, Any]:
    """Register the configuration commands; returns the helpers and groups that
    the runtime commands (cli/runtime.py) extend."""
    def cmd(parent: Any, name: str, func: Callable[[argparse.Namespace], int], help: str, example: str) -> argparse.ArgumentParser:
        p = parent.add_parser(name, parents=[common], help=help, description=help,
                              epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    def group(name: str, help: str, parent: Any = None) -> Any:
        """A command with sub-commands; nested under `parent` (a group) if given."""
        p = (parent or sub).add_parser(name, help=help, description=help)
        dest = "action" if parent is None else f"{name}_command"
        g = p.add_subparsers(dest=dest, metavar="ACTION", parser_class=type(p))
        g.required = True
        return g

    p = cmd(sub, "init", cmd_init, "create the store from a DC template (and install the racks and tenants it lists)",
            "ctmanager init example            # the example DC shipped with ctmanager")
    p.add_argument("template", help="a DC template file, or the name of one on the template search path (e.g. example)")

    racks = group("rack", "racks installed into slots of the DC template")
    p = cmd(racks, "install", cmd_rack_install, "install a delivered rack into a free slot",
            "ctmanager rack install 102 rack-102.toml")
    p.add_argument("slot", help="slot number or rack name (102 or rack-102)")
    p.add_argument("manifest", help="delivery manifest (TOML): [[nodes]] position, sku, serial, mac")
    cmd(racks, "list", cmd_rack_list, "list installed racks", "ctmanager rack list --json")

    tenants = group("tenant", "tenants (customer instances) and their core CTs")
    p = cmd(tenants, "add", cmd_tenant_add, "add a tenant: its core CT and default routes to the rack's services",
            "ctmanager tenant add myhost --rack rack-101 --apps jira,confluence,postgresql --memory 8G")
    p.add_argument("name", help="tenant name (a DNS label): myhost -> myhost.<tenant_zone>")
    p.add_argument("--rack", required=True, help="rack the tenant lives in (rack-101 or 101)")
    p.add_argument("--apps", default="", help="comma-separated apps run in the core CT")
    _resource_args(p)
    cmd(tenants, "list", cmd_tenant_list, "list tenants", "ctmanager tenant list")
    p = cmd(tenants, "rm", cmd_tenant_rm, "remove a tenant, its CTs and its routes", "ctmanager tenant rm myhost")
    p.add_argument("name")
    p.add_argument("--purge-data", action="store_true", help="also delete the CTs' /data when they are destroyed")

    cts = group("ct", "containers (CTs)")
    p = cmd(cts, "add", cmd_ct_add, "add a CT (IP and CTID are allocated)",
            "ctmanager ct add build-101-1 --rack rack-101 --memory 4G --apps bamboo")
    p.add_argument("hostname", help="hostname (a DNS label, unique in the DC)")
    p.add_argument("--rack", required=True, help="rack (rack-101 or 101)")
    p.add_argument("--tenant", help="tenant the CT belongs to (must live in the same rack)")
    p.add_argument("--env", help="software environment for /sw (default: the DC's first)")
    p.add_argument("--admst", default="up", choices=("up", "down"), help="administrative state (default: up)")
    p.add_argument("--ctid", type=_int, help="explicit CTID (default: next free, never reused)")
    p.add_argument("--apps", default="", help="comma-separated apps")
    _resource_args(p)
    p = cmd(cts, "set", cmd_ct_set, "change a CT's ADMST, resources, apps or environment",
            "ctmanager ct set myhost --admst down")
    p.add_argument("ct", help="CTID or hostname")
    p.add_argument("--admst", choices=("up", "down"))
    p.add_argument("--env")
    p.add_argument("--apps", help="comma-separated apps (replaces the list)")
    _resource_args(p)
    p = cmd(cts, "rm", cmd_ct_rm, "remove a CT (refused while a route points at it); the reconcile loop destroys it, keeping /data",
            "ctmanager ct rm build-101-1")
    p.add_argument("ct", help="CTID or hostname")
    p.add_argument("--purge-data", action="store_true", help="also delete its /data when it is destroyed")
    p = cmd(cts, "list", cmd_ct_list, "list CTs with their configuration", "ctmanager ct list --rack rack-101")
    p.add_argument("--rack")
    p.add_argument("--tenant")
    p = cmd(cts, "show", cmd_ct_show, "show one CT", "ctmanager ct show 1005 --json")
    p.add_argument("ct", help="CTID or hostname")

    routes = group("route", "tenant routes: (tenant, service) -> CT or pool, published as DNS CNAMEs")
    p = cmd(routes, "set", cmd_route_set, "point a tenant's routing name at a CT or pool (moves load)",
            "ctmanager route set myhost smtp relay-101-2")
    p.add_argument("tenant")
    p.add_argument("service", help="routing name the tenant's apps resolve (smtp, metrics, ...)")
    p.add_argument("target", help="CT hostname or pool name (e.g. relay-101)")
    p = cmd(routes, "rm", cmd_route_rm, "remove a route", "ctmanager route rm myhost socks")
    p.add_argument("tenant")
    p.add_argument("service")
    p = cmd(routes, "list", cmd_route_list, "list routes", "ctmanager route list --tenant myhost")
    p.add_argument("--tenant")

    p = cmd(sub, "render", cmd_render, "render every CT's OpenVZ/LXC/resolv.conf files and storage exports into OUTDIR",
            "ctmanager render /srv/ctconf --diff     # show what would change, write nothing")
    p.add_argument("outdir")
    p.add_argument("--diff", action="store_true", help="print a unified diff of what would change; write nothing")
    p.add_argument("--workers", type=_positive, help="render processes (default: the CPUs this process may use)")

    cmd(sub, "status", cmd_status, "CTID | HOSTNAME | TENANT | IP | HN | ADMST | OPST | SINCE | REPORT for every CT "
        "(OPST is UNKNOWN when its HN's last report is older than the manager's stale_after)",
        "ctmanager status --json | jq '.[] | select(.opst != \"UP\")'")
    return {"cmd": cmd, "group": group, "ct": cts}


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _positive(text: str) -> int:
    n = _int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return n


def _resource_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory", help="RAM, e.g. 4G")
    p.add_argument("--swap", help="swap, e.g. 1G")
    p.add_argument("--disk", help="/data quota, e.g. 50G")
    p.add_argument("--cpus", help="CPU count")
    p.add_argument("--cpuunits", help="CPU weight (OpenVZ CPUUNITS / cgroup shares)")
    p.add_argument("--cpulimit", help="CPU limit in percent of one CPU (default: cpus x 100)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in RES_OPTS if getattr(args, k, None) is not None}


def _apps(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [a.strip() for a in text.split(",") if a.strip()]


def _json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def _store(args: argparse.Namespace) -> Store:
    return open_store(default_path(getattr(args, "store", None)))


@contextlib.contextmanager
def _editing(args: argparse.Namespace) -> Iterator[tuple[Store, Any]]:
    """Store + Inventory inside one write transaction."""
    from ..inventory import Inventory

    with _store(args) as store:
        dc = queries.dc_template(store)
        with store.transaction():
            yield store, Inventory(store, dc)
        _publish_dns(store)


def _publish_dns(store: Store) -> None:
    """Every edit publishes its DNS changes at once, if a DNS server is configured;
    if it cannot be reached they stay queued in the store (nothing is lost)."""
    from ..dnsroutes import sync

    try:
        server = sync.server_of(store, timeout=2.0)
    except CtmError as exc:
        sys.stderr.write(f"dns: not published: {exc}\n")
        return
    if server is None:
        return
    report = sync.sync(store, server)
    if report.applied:
        sys.stderr.write(f"dns: published {len(report.applied)} change(s) to {server.host}:{server.port}\n")
    for change, why in report.conflicts:
        sys.stderr.write(f"dns: CONFLICT {why}\n")
    if report.error:
        sys.stderr.write(f"dns: {len(report.pending)} change(s) PENDING ({report.error}); "
                         "sent when the server answers (ctmanager dns sync)\n")


def _parse_rack(text: str, field: str = "rack") -> int:
    from ..template import parse_rack

    return parse_rack(text, field)


# ---- init / racks ----------------------------------------------------------
def cmd_init(args: argparse.Namespace) -> int:
    from .. import inventory
    from ..paths import find_dc_template

    path = find_dc_template(args.template)
    store_path = default_path(getattr(args, "store", None))
    plan = inventory.prepare_init(path)  # validates template + manifests before the store exists
    created = not store_path.exists()
    try:
        with open_store(store_path, create=True) as store, store.transaction():
            dc = inventory.apply_init(store, plan)
            summary = {"store": str(store_path), "dc": dc.name, "template": str(path),
                       "racks": [r["name"] for r in queries.racks(store)], "cts": len(queries.cts(store))}
    except BaseException:
        if created:  # leave no half-made store behind
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{store_path}{suffix}")
        raise
    if _json(args):
        emit_json(summary)
    else:
        print(f"initialised DC {summary['dc']} in {store_path} from {path}: racks {', '.join(summary['racks']) or '(none)'}, {summary['cts']} CTs")
    return 0


def cmd_rack_install(args: argparse.Namespace) -> int:
    from .. import manifest

    slot = _parse_rack(args.slot, "slot")
    with _store(args) as store:
        dc = queries.dc_template(store)
        nodes = manifest.load(args.manifest, dc)
    with _editing(args) as (store, inv):
        done = inv.install_rack(slot, nodes, str(args.manifest))
    if _json(args):
        emit_json({"slot": done.slot, "rack": done.name, "network": done.network,
                   "nodes": [{"hostname": h, "role": r, "ip": ip} for h, r, ip in done.nodes],
                   "service_cts": [{"ctid": c.ctid, "hostname": c.hostname, "ip": c.ip} for c in done.service_cts]})
    else:
        print(f"installed {done.name} in slot {done.slot}: network {done.network}")
        table(("HOSTNAME", "ROLE", "IP"), done.nodes)
        table(("CTID", "HOSTNAME", "IP"), [(c.ctid, c.hostname, c.ip) for c in done.service_cts])
    return 0


def cmd_rack_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        rows = queries.racks(store)
    if _json(args):
        emit_json(rows)
    else:
        table(("SLOT", "RACK", "NETWORK", "HNS", "STORAGE", "TENANTS", "CTS"),
              [(r["slot"], r["name"], r["network"], r["hns"], r["storage"], r["tenants"], r["cts"]) for r in rows])
    return 0


# ---- tenants ---------------------------------------------------------------
def cmd_tenant_add(args: argparse.Namespace) -> int:
    from .. import resources

    slot = _parse_rack(args.rack)
    with _editing(args) as (store, inv):
        res = resources.with_overrides(inv.dc.defaults, inv.dc.max_compute, _overrides(args), "tenant")
        core = inv.add_tenant(args.name, slot, _apps(args.apps) or [], res)
        routes = queries.routes(store, tenant=core.hostname)
    if _json(args):
        emit_json({"tenant": core.hostname, "rack": rack_name(slot), "core": _ct_json(core),
                   "routes": {r.service: r.target for r in routes}})
    else:
        print(f"added tenant {core.hostname} in {rack_name(slot)}: core CT {core.ctid} {core.hostname} {core.ip}")
        print("routes: " + ", ".join(f"{r.service} -> {r.target}" for r in routes))
    return 0


def cmd_tenant_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        rows = queries.tenants(store)
    if _json(args):
        emit_json(rows)
    else:
        table(("TENANT", "RACK", "CORE CTID", "CORE IP", "APPS", "ROUTES"),
              [(r["name"], r["rack"], r["core_ctid"], r["core_ip"], r["apps"], r["routes"]) for r in rows])
    return 0


def cmd_tenant_rm(args: argparse.Namespace) -> int:
    with _editing(args) as (store, inv):
        removed = inv.rm_tenant(args.name, purge=args.purge_data)
    if _json(args):
        emit_json({"tenant": args.name, "removed_cts": [c.ctid for c in removed]})
    else:
        print(f"removed tenant {args.name} and CT(s) {', '.join(str(c.ctid) for c in removed)}")
    return 0


# ---- CTs -------------------------------------------------------------------
def _ct_json(ct: Any) -> dict[str, Any]:
    from .. import resources

    return {"ctid": ct.ctid, "hostname": ct.hostname, "rack": rack_name(ct.rack), "tenant": ct.tenant,
            "service": ct.service, "env": ct.env, "ip": ct.ip, "storage": ct.storage, "admst": ct.admst,
            **resources.as_dict(ct.resources), "apps": list(ct.apps)}


def cmd_ct_add(args: argparse.Namespace) -> int:
    from .. import resources

    slot = _parse_rack(args.rack)
    with _editing(args) as (store, inv):
        res = resources.with_overrides(inv.dc.defaults, inv.dc.max_compute, _overrides(args), "ct")
        ct = inv.add_ct(args.hostname, slot, resources=res, tenant=args.tenant, env=args.env,
                        admst=args.admst, apps=_apps(args.apps) or [], ctid=args.ctid)
    if _json(args):
        emit_json(_ct_json(ct))
    else:
        print(f"added CT {ct.ctid} {ct.hostname} {ct.ip} in {rack_name(ct.rack)} (ADMST {ct.admst})")
    return 0


def cmd_ct_set(args: argparse.Namespace) -> int:
    from .. import resources

    with _editing(args) as (store, inv):
        current = queries.find_ct(store, args.ct)
        res = resources.with_overrides(current.resources, inv.dc.max_compute, _overrides(args), "ct")
        ct = inv.set_ct(args.ct, resources=res, admst=args.admst, apps=_apps(args.apps), env=args.env)
    if _json(args):
        emit_json(_ct_json(ct))
    else:
        print(f"updated CT {ct.ctid} {ct.hostname} (ADMST {ct.admst})")
    return 0


def cmd_ct_rm(args: argparse.Namespace) -> int:
    with _editing(args) as (store, inv):
        ct = inv.rm_ct(args.ct, purge=args.purge_data)
    if _json(args):
        emit_json({"removed": ct.ctid, "hostname": ct.hostname})
    else:
        print(f"removed CT {ct.ctid} {ct.hostname}")
    return 0


def cmd_ct_list(args: argparse.Namespace) -> int:
    from ..validate import format_size

    with _store(args) as store:
        cts = queries.cts(store, rack=_parse_rack(args.rack) if args.rack else None, tenant=args.tenant)
    if _json(args):
        emit_json([_ct_json(c) for c in cts])
    else:
        table(("CTID", "HOSTNAME", "RACK", "TENANT", "SERVICE", "IP", "ADMST", "MEM", "DISK", "CPUS", "APPS"),
              [(c.ctid, c.hostname, rack_name(c.rack), c.tenant, c.service, c.ip, c.admst,
                format_size(c.resources.memory), format_size(c.resources.disk), c.resources.cpus, c.apps) for c in cts])
    return 0


def cmd_ct_show(args: argparse.Namespace) -> int:
    with _store(args) as store:
        data = _ct_json(queries.find_ct(store, args.ct))
    if _json(args):
        emit_json(data)
    else:
        width = max(map(len, data))
        for k, v in data.items():
            print(f"{k:<{width}}  {', '.join(v) if isinstance(v, list) else ('-' if v is None else v)}")
    return 0


# ---- routes ----------------------------------------------------------------
def cmd_route_set(args: argparse.Namespace) -> int:
    with _editing(args) as (store, inv):
        old = inv.set_route(args.tenant, args.service, args.target)
    if _json(args):
        emit_json({"tenant": args.tenant, "service": args.service, "target": args.target, "previous": old})
    else:
        print(f"route {args.tenant}/{args.service} -> {args.target}" + (f" (was {old})" if old else " (new)"))
    return 0


def cmd_route_rm(args: argparse.Namespace) -> int:
    with _editing(args) as (store, inv):
        inv.rm_route(args.tenant, args.service)
    if _json(args):
        emit_json({"tenant": args.tenant, "service": args.service, "removed": True})
    else:
        print(f"removed route {args.tenant}/{args.service}")
    return 0


def cmd_route_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        if args.tenant:
            queries.tenant_rack(store, args.tenant)
        rows = queries.routes(store, tenant=args.tenant)
    if _json(args):
        emit_json([{"tenant": r.tenant, "service": r.service, "target": r.target} for r in rows])
    else:
        table(("TENANT", "SERVICE", "TARGET"), [(r.tenant, r.service, r.target) for r in rows])
    return 0


# ---- render / status -------------------------------------------------------
def cmd_render(args: argparse.Namespace) -> int:
    from ..render import render_tree

    outdir = Path(args.outdir)
    with _store(args) as store:
        report = render_tree(store, outdir, diff=args.diff, workers=args.workers)
    if _json(args):
        emit_json({"outdir": str(outdir), "dry_run": args.diff, **report.as_dict(),
                   **({"diff": report.diff} if args.diff else {})})
        return 0
    if args.diff:
        sys.stdout.write(report.diff)
        print(f"{len(report.written)} file(s) would change, {len(report.removed)} would be removed, {report.unchanged} unchanged")
    else:
        print(f"rendered into {outdir}: {len(report.written)} written, {len(report.removed)} removed, {report.unchanged} unchanged")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _store(args) as store:
        if store.get_meta("template") is None:
            raise StoreError(f"{store.path}: store is not initialised; run: ctmanager init TEMPLATE")
        rows = queries.status(store, time.time())
    if _json(args):
        keys = queries.STATUS_FIELDS
        out = [dict(zip(keys, r)) for r in rows]
        for d in out:
            d["since"] = when(d["since"])
        emit_json(out)
    else:
        table(tuple(k.upper() for k in queries.STATUS_FIELDS), [(*r[:7], when(r[7]), age(r[8])) for r in rows])
    return 0
