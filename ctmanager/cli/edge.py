"""`ctmanager edge path set|rm|list` and `ctmanager edge config OUT`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CtmError, InputError
from ..files import write_atomic
from ..store import Store, queries
from ..store import proxies as proxyrows
from .common import Registry, out_path, port, store_of, want_json
from .output import emit_json, table

if TYPE_CHECKING:
    from ..proxies import nginx


def register(reg: Registry) -> None:
    cmd, group = reg.cmd, reg.group
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
    p.add_argument("out", type=out_path, help="the file to write")
    p.add_argument("--cert", default="", help="TLS certificate (PEM); with --key, the edge terminates HTTPS")
    p.add_argument("--key", default="")
    p.add_argument("--prefix", default="/var/lib/ctmanager-edge", help="pid, logs and temp files")
    p.add_argument("--http-port", type=port, default=80)
    p.add_argument("--https-port", type=port, default=443)
    p.add_argument("--resolver-port", type=port, default=53)
    p.add_argument("--backend-port", type=port, default=80, help="where the CTs' web servers listen (default 80)")


def cmd_path_set(args: argparse.Namespace) -> int:
    from ..proxies import nginx
    r = nginx.path_route(args.path, args.service, args.tenant, args.strip, args.allow, args.deny)
    with store_of(args) as store:
        proxyrows.set_path_route(store, r.tenant, r.path, r.service, r.strip, r.allow, r.deny)
    if want_json(args):
        emit_json({"tenant": r.tenant, "path": r.path, "service": r.service, "strip": r.strip,
                   "allow": r.allow, "deny": r.deny})
    else:
        print(f"{r.tenant or 'every tenant'}: {r.path} -> {r.service}")
    return 0


def cmd_path_rm(args: argparse.Namespace) -> int:
    with store_of(args) as store:
        proxyrows.rm_path_route(store, args.tenant, args.path)
    if not want_json(args):
        print(f"removed {args.path}")
    return 0


def _routes(store: Store) -> tuple[nginx.PathRoute, ...]:
    from ..proxies import nginx
    return nginx.routes_from_rows(proxyrows.path_routes(store))


def cmd_path_list(args: argparse.Namespace) -> int:
    with store_of(args) as store:
        routes = _routes(store)
    if want_json(args):
        emit_json([r.__dict__ for r in routes])
    else:
        table(("TENANT", "PATH", "SERVICE", "STRIP", "ALLOW", "DENY"),
              [(r.tenant or "*", r.path, r.service, "yes" if r.strip else "no", ",".join(r.allow) or "-",
                ",".join(r.deny) or "-") for r in routes])
    return 0


def edge_for(store: Any, **kw: Any) -> nginx.Edge:
    from ..proxies import nginx
    dc = queries.dc_template(store)
    tenants = tuple(t["name"] for t in queries.tenants(store))
    return nginx.Edge(dc.tenant_zone, tuple(dc.resolvers), tenants, _routes(store), **kw)


def cmd_edge_config(args: argparse.Namespace) -> int:
    from ..proxies import nginx
    if bool(args.cert) != bool(args.key):
        raise InputError("--cert and --key go together")
    for name in ("http_port", "https_port", "resolver_port", "backend_port"):
        if not 1 <= getattr(args, name) <= 65535:
            raise InputError(f"must be 1-65535 (got {getattr(args, name)})", where=f"--{name.replace('_', '-')}")
    with store_of(args) as store:
        edge = edge_for(store, cert=args.cert, key=args.key, prefix=args.prefix, listen_http=args.http_port,
                        listen_https=args.https_port, resolver_port=args.resolver_port,
                        backend_port=args.backend_port)
    text = nginx.render(edge)
    out = Path(args.out)
    try:
        write_atomic(out, text.encode(), 0o644)
    except OSError as exc:
        raise CtmError(f"{out}: {exc.strerror}") from None
    if want_json(args):
        emit_json({"file": str(out), "tenants": len(edge.tenants), "path_routes": len(edge.routes)})
    else:
        print(f"wrote {out}: {len(edge.tenants)} tenants, {len(edge.routes)} path routes; check: nginx -t -c {out}")
    return 0
