"""`ctmanager route set|rm|list`: (tenant, service) -> CT or pool, published as DNS CNAMEs."""

from __future__ import annotations

import argparse

from ..store import queries
from .common import Registry, editing, store_of, want_json
from .output import emit_json, table


def register(reg: Registry) -> None:
    routes = reg.group("route", "tenant routes: (tenant, service) -> CT or pool, published as DNS CNAMEs")
    p = reg.cmd(routes, "set", cmd_route_set, "point a tenant's routing name at a CT or pool (moves load)",
                "ctmanager route set myhost smtp relay-101-2")
    p.add_argument("tenant")
    p.add_argument("service", help="routing name the tenant's apps resolve (smtp, metrics, ...)")
    p.add_argument("target", help="CT hostname or pool name (e.g. relay-101)")
    p.add_argument("--foreign", action="store_true",
                   help="allow a target outside the tenant's own CTs and its rack's service CTs and pools "
                        "(another tenant's CT, another rack)")
    p = reg.cmd(routes, "rm", cmd_route_rm, "remove a route", "ctmanager route rm myhost socks")
    p.add_argument("tenant")
    p.add_argument("service")
    p = reg.cmd(routes, "list", cmd_route_list, "list routes", "ctmanager route list --tenant myhost")
    p.add_argument("--tenant")


def cmd_route_set(args: argparse.Namespace) -> int:
    with editing(args) as (store, inv):
        old = inv.set_route(args.tenant, args.service, args.target, foreign=args.foreign)
    if want_json(args):
        emit_json({"tenant": args.tenant, "service": args.service, "target": args.target, "previous": old})
    else:
        print(f"route {args.tenant}/{args.service} -> {args.target}" + (f" (was {old})" if old else " (new)"))
    return 0

def cmd_route_rm(args: argparse.Namespace) -> int:
    with editing(args) as (store, inv):
        inv.rm_route(args.tenant, args.service)
    if want_json(args):
        emit_json({"tenant": args.tenant, "service": args.service, "removed": True})
    else:
        print(f"removed route {args.tenant}/{args.service}")
    return 0

def cmd_route_list(args: argparse.Namespace) -> int:
    with store_of(args) as store:
        if args.tenant:
            queries.tenant_rack(store, args.tenant)
        rows = queries.routes(store, tenant=args.tenant)
    if want_json(args):
        emit_json([{"tenant": r.tenant, "service": r.service, "target": r.target} for r in rows])
    else:
        table(("TENANT", "SERVICE", "TARGET"), [(r.tenant, r.service, r.target) for r in rows])
    return 0
