"""`ctmanager edge path set|rm|list` and `ctmanager edge config OUT`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .. import queries
from ..cli.commands import _json, _store
from ..cli.output import emit_json, table
from ..errors import CtmError, InputError, NotFoundError
from ..render.files import write_atomic
from . import nginx


def register(sub: argparse._SubParsersAction, helpers: dict[str, Any]) -> None:
    cmd, group = helpers["cmd"], helpers["group"]
    edge = group("edge", "the nginx edge proxies: tenants by Host, backends by DNS, path routes with ACLs")
    paths = group("path", "path routes: a URL prefix sent to a tenant routing name", parent=edge)
    p = cmd(paths, "set", cmd_path_set, "route a URL prefix to a tenant routing name (for all tenants, or one)",
            "ctmanager edge path set /experimental/ experiments --strip --allow 10.0.0.0/8")
    p.add_argument("path")
    p.add_argument("service", help="the tenant routing name it goes to (resolved as <service>.<tenant>.<zone>.internal)")
    p.add_argument("--tenant", default="", help="only this tenant (default: every tenant)")
    p.add_argument("--strip", action="store_true", help="remove the prefix before passing the request on")
    p.add_argument("--allow", action="append", default=[], metavar="CIDR", help="only these clients (repeatable)")
    p.add_argument("--deny", action="append", default=[], metavar="CIDR", help="not these clients (repeatable)")
    p = cmd(paths, "rm", cmd_path_rm, "remove a path route", "ctmanager edge path rm /experimental/")
    p.add_argument("path")
    p.add_argument("--tenant", default="")
    cmd(paths, "list", cmd_path_list, "list path routes", "ctmanager edge path list")
    p = cmd(edge, "config", cmd_edge_config, "write the edge's nginx.conf", "ctmanager edge config /etc/nginx/edge.conf")
    p.add_argument("out", help="the file to write")
    p.add_argument("--cert", default="", help="TLS certificate (PEM); with --key, the edge terminates HTTPS")
    p.add_argument("--key", default="")
    p.add_argument("--prefix", default="/var/lib/ctmanager-edge", help="pid, logs and temp files")
    p.add_argument("--http-port", type=int, default=80)
    p.add_argument("--https-port", type=int, default=443)
    p.add_argument("--resolver-port", type=int, default=53)
    p.add_argument("--backend-port", type=int, default=80, help="where the CTs' web servers listen (default 80)")


def cmd_path_set(args: argparse.Namespace) -> int:
    r = nginx.path_route(args.path, args.service, args.tenant, args.strip, args.allow, args.deny)
    with _store(args) as store:
        if r.tenant:
            queries.tenant_rack(store, r.tenant)  # must exist
        with store.transaction():
            store.db.execute(
                "INSERT INTO path_routes (tenant, path, service, strip, allow, deny) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(tenant, path) DO UPDATE SET service = excluded.service, strip = excluded.strip, "
                "allow = excluded.allow, deny = excluded.deny",
                (r.tenant, r.path, r.service, int(r.strip), json.dumps(r.allow), json.dumps(r.deny)))
            store.event("edge.path", f"{r.tenant or '*'}{r.path}", r.service)
    if _json(args):
        emit_json({"tenant": r.tenant, "path": r.path, "service": r.service, "strip": r.strip,
                   "allow": r.allow, "deny": r.deny})
    else:
        print(f"{r.tenant or 'every tenant'}: {r.path} -> {r.service}")
    return 0


def cmd_path_rm(args: argparse.Namespace) -> int:
    with _store(args) as store:
        with store.transaction():
            cur = store.db.execute("DELETE FROM path_routes WHERE tenant = ? AND path = ?", (args.tenant, args.path))
            if cur.rowcount == 0:
                raise NotFoundError(f"no path route {args.path!r}{' for ' + args.tenant if args.tenant else ''}")
    if not _json(args):
        print(f"removed {args.path}")
    return 0


def _routes(store: Any) -> tuple[nginx.PathRoute, ...]:
    return nginx.routes_from_rows(store.query(
        "SELECT tenant, path, service, strip, allow, deny FROM path_routes ORDER BY tenant, path"))


def cmd_path_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        routes = _routes(store)
    if _json(args):
        emit_json([r.__dict__ for r in routes])
    else:
        table(("TENANT", "PATH", "SERVICE", "STRIP", "ALLOW", "DENY"),
              [(r.tenant or "*", r.path, r.service, "yes" if r.strip else "no", ",".join(r.allow) or "-",
                ",".join(r.deny) or "-") for r in routes])
    return 0


def edge_for(store: Any, **kw: Any) -> nginx.Edge:
    dc = queries.dc_template(store)
    tenants = tuple(t["name"] for t in queries.tenants(store))
    return nginx.Edge(dc.tenant_zone, tuple(dc.resolvers), tenants, _routes(store), **kw)


def cmd_edge_config(args: argparse.Namespace) -> int:
    if bool(args.cert) != bool(args.key):
        raise CtmError("--cert and --key go together")
    for name in ("http_port", "https_port", "resolver_port", "backend_port"):
        if not 1 <= getattr(args, name) <= 65535:
            raise InputError(f"must be 1-65535 (got {getattr(args, name)})", where=f"--{name.replace('_', '-')}")
    with _store(args) as store:
        edge = edge_for(store, cert=args.cert, key=args.key, prefix=args.prefix, listen_http=args.http_port,
                        listen_https=args.https_port, resolver_port=args.resolver_port,
                        backend_port=args.backend_port)
    text = nginx.render(edge)
    out = Path(args.out)
    try:
        write_atomic(out, text.encode(), 0o644)
    except OSError as exc:
        raise CtmError(f"{out}: {exc.strerror}") from None
    if _json(args):
        emit_json({"file": str(out), "tenants": len(edge.tenants), "path_routes": len(edge.routes)})
    else:
        print(f"wrote {out}: {len(edge.tenants)} tenants, {len(edge.routes)} path routes; check: nginx -t -c {out}")
    return 0
