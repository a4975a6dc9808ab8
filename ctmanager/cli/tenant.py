"""`ctmanager tenant add|list|rm`: tenants (customer instances) and their core CTs."""

from __future__ import annotations

import argparse

from .. import validate as v
from ..dc.model import rack_name
from ..store import queries
from .common import Registry, app_list, editing, overrides, parse_rack, resource_args, store_of, want_json
from .ct import ct_json
from .output import emit_json, table


def register(reg: Registry) -> None:
    tenants = reg.group("tenant", "tenants (customer instances) and their core CTs")
    p = reg.cmd(tenants, "add", cmd_tenant_add, "add a tenant: its core CT and default routes to the rack's services",
                "ctmanager tenant add myhost --rack rack-101 --apps jira,confluence,postgresql --memory 8G")
    p.add_argument("name", help="tenant name (a DNS label): myhost -> myhost.<tenant_zone>")
    p.add_argument("--rack", required=True, help="rack the tenant lives in (rack-101 or 101)")
    p.add_argument("--apps", default="", help="comma-separated apps run in the core CT")
    p.add_argument("--realm", default="", help="pin the tenant to this realm (see: ctmanager rack list): its data is "
                   "never put in a rack of another realm")
    resource_args(p)
    reg.cmd(tenants, "list", cmd_tenant_list, "list tenants", "ctmanager tenant list")
    p = reg.cmd(tenants, "set", cmd_tenant_set, "pin a tenant to a realm, or unpin it",
                "ctmanager tenant set myhost --realm eu-west")
    p.add_argument("name")
    realm = p.add_mutually_exclusive_group(required=True)
    realm.add_argument("--realm", help="the realm (its rack must be in it)")
    realm.add_argument("--no-realm", action="store_true", help="unpin: any rack may hold its data")
    p = reg.cmd(tenants, "rm", cmd_tenant_rm, "remove a tenant, its CTs and its routes", "ctmanager tenant rm myhost")
    p.add_argument("name")
    p.add_argument("--purge-data", action="store_true", help="also delete the CTs' /data when they are destroyed")


def cmd_tenant_add(args: argparse.Namespace) -> int:
    from ..dc import resources

    slot = parse_rack(args.rack)
    with editing(args) as (store, inv):
        res = resources.with_overrides(inv.dc.defaults, inv.dc.max_compute, overrides(args), "tenant")
        core = inv.add_tenant(args.name, slot, app_list(args.apps) or [], res, v.label(args.realm, "--realm")
                              if args.realm else "")
        routes = queries.routes(store, tenant=core.hostname)
    if want_json(args):
        emit_json({"tenant": core.hostname, "rack": rack_name(slot), "core": ct_json(core),
                   "routes": {r.service: r.target for r in routes}})
    else:
        print(f"added tenant {core.hostname} in {rack_name(slot)}"
              f"{f' (realm {args.realm})' if args.realm else ''}: core CT {core.ctid} {core.hostname} {core.ip}")
        print("routes: " + ", ".join(f"{r.service} -> {r.target}" for r in routes))
    return 0

def cmd_tenant_list(args: argparse.Namespace) -> int:
    with store_of(args) as store:
        rows = queries.tenants(store)
        zone = queries.dc_template(store).tenant_zone
    if want_json(args):
        # the public name (what mail and the edge are addressed to) and the internal view's
        emit_json([{**r, "fqdn": f"{r['name']}.{zone}", "internal_fqdn": f"{r['name']}.{zone}.internal"}
                   for r in rows])
    else:
        table(("TENANT", "RACK", "REALM", "CORE CTID", "CORE IP", "APPS", "ROUTES", "MOVING"),
              [(r["name"], r["rack"], r["realm"] or "-", r["core_ctid"], r["core_ip"], r["apps"], r["routes"],
                r["moving"] or "-") for r in rows])
    return 0


def cmd_tenant_set(args: argparse.Namespace) -> int:
    realm = "" if args.no_realm else v.label(args.realm, "--realm")
    with editing(args) as (store, inv):
        old = inv.set_realm(args.name, realm)
    if want_json(args):
        emit_json({"tenant": args.name, "realm": realm or None, "was": old or None})
    else:
        print(f"tenant {args.name}: realm {realm or '(none)'} (was {old or '(none)'})")
    return 0

def cmd_tenant_rm(args: argparse.Namespace) -> int:
    from .ct import quarantine_note

    with editing(args) as (store, inv):
        removed = inv.rm_tenant(args.name, purge=args.purge_data)
        grace = inv.dc.ip_quarantine
    if want_json(args):
        emit_json({"tenant": args.name, "removed_cts": [c.ctid for c in removed],
                   "ips": [c.ip for c in removed], "ip_quarantine": grace})
    else:
        print(f"removed tenant {args.name} and CT(s) {', '.join(str(c.ctid) for c in removed)}; "
              f"{quarantine_note(list(removed), grace)}")
    return 0
