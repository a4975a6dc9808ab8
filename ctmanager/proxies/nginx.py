"""The nginx edge, rendered from the store: tenants by Host, backends by DNS.

- `map $host $ctm_tenant` lists the tenants that exist; any other Host gets 421
  and nothing is proxied, so a client cannot make the edge reach arbitrary
  `.internal` names. proxy_pass uses the mapped tenant name, never $host itself.
- Default route: `http://<tenant>.<tenant zone>.internal$request_uri`, resolved
  by the internal DNS (`resolver … valid=5s`): a moved CT or route is followed
  within seconds, with no reload.
- Path routes (for every tenant, or one): `location /experimental/` ->
  `http://experiments.<tenant>.<zone>.internal`, optionally stripping the
  prefix, with per-location allow/deny CIDR lists.
- TLS termination when a certificate and key are given.
Every value that reaches the file was validated (labels, paths, CIDRs).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .. import validate as v
from ..errors import InputError

_PATH = re.compile(r"/(?:[A-Za-z0-9._~-]{1,63}/){1,16}")  # at least one segment: "/" is the default route
MAX_PATH = 256
MAX_CIDRS = 64  # per list: nginx reads them all for each request


@dataclass(frozen=True)
class PathRoute:
    path: str
    service: str
    tenant: str = ""  # "" = every tenant
    strip: bool = False
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


def path_route(path: str, service: str, tenant: str = "", strip: bool = False,
               allow: Sequence[str] = (), deny: Sequence[str] = ()) -> PathRoute:
    """A validated path route (the one door into the config file): whatever passes
    renders a config `nginx -t` accepts."""
    if path == "/":
        raise InputError("the path / is every tenant's default route (to its core CT); route a prefix like /app/")
    if not isinstance(path, str) or len(path) > MAX_PATH or not _PATH.fullmatch(path) \
            or any(seg in (".", "..") for seg in path.split("/")):
        raise InputError(f"a path must look like /name/ or /a/b/ (letters, digits, . _ ~ -; up to 16 segments of "
                         f"63 and {MAX_PATH} characters) (got {str(path)[:80]!r})")
    if not isinstance(service, str) or not v.is_label(service):
        raise InputError(f"service must be a tenant routing name, a DNS label (got {str(service)[:80]!r})")
    if tenant and not v.is_label(tenant):
        raise InputError(f"tenant must be a DNS label (got {str(tenant)[:80]!r})")
    if len(allow) > MAX_CIDRS or len(deny) > MAX_CIDRS:
        raise InputError(f"at most {MAX_CIDRS} networks per --allow or --deny list")
    nets = []
    for cidr in (*allow, *deny):
        try:
            nets.append(str(ipaddress.ip_network(cidr, strict=False)))
        except ValueError:
            raise InputError(f"{cidr!r} is not an IP network (CIDR)") from None
    return PathRoute(path, service, tenant, strip, tuple(nets[:len(allow)]), tuple(nets[len(allow):]))


@dataclass(frozen=True)
class Edge:
    tenant_zone: str
    resolvers: tuple[str, ...]
    tenants: tuple[str, ...]
    routes: tuple[PathRoute, ...] = ()
    cert: str = ""
    key: str = ""
    listen_http: int = 80
    listen_https: int = 443
    prefix: str = "/var/lib/ctmanager-edge"  # pid, temp files, logs
    resolver_port: int = 53
    backend_port: int = 80  # where the CTs' web servers listen


def render(e: Edge) -> str:
    zone = e.tenant_zone
    for t in e.tenants:
        if not v.is_label(t):
            raise InputError(f"tenant {t!r} is not a DNS label")
    for resolver in e.resolvers:
        ipaddress.ip_address(resolver)
    for what, path in (("--cert", e.cert), ("--key", e.key), ("--prefix", e.prefix)):
        if path:
            v.path(path, what)
    resolvers = " ".join(f"{resolver}:{e.resolver_port}" for resolver in e.resolvers)
    out = [f"# nginx edge for *.{zone}, written by ctmanager: do not edit",
           "worker_processes auto;", f"pid {e.prefix}/nginx.pid;", f"error_log {e.prefix}/error.log warn;",
           "events { worker_connections 4096; }", "http {",
           f"    access_log {e.prefix}/access.log;",
           f"    client_body_temp_path {e.prefix}/client_body;", f"    proxy_temp_path {e.prefix}/proxy;",
           f"    fastcgi_temp_path {e.prefix}/fastcgi;", f"    uwsgi_temp_path {e.prefix}/uwsgi;",
           f"    scgi_temp_path {e.prefix}/scgi;",
           "    server_tokens off;",
           "    map_hash_max_size 262144;", "    map_hash_bucket_size 128;",
           f"    resolver {resolvers} valid=5s ipv6=off;", "    resolver_timeout 2s;",
           "    # the tenants that exist: any other Host is refused before anything is proxied",
           "    map $host $ctm_tenant {", "        hostnames;", '        default "";']
    out += [f"        {t}.{zone} {t};" for t in sorted(e.tenants)]
    out += ["    }"]
    global_routes = [r for r in e.routes if not r.tenant]
    per_tenant: dict[str, list[PathRoute]] = {}
    for r in e.routes:
        if r.tenant:
            per_tenant.setdefault(r.tenant, []).append(r)
    out += _server(e, "_", global_routes, default=True)
    for tenant in sorted(per_tenant):
        if tenant in e.tenants:
            # a tenant with its own paths gets its own server: its routes first, then the global ones
            routes = per_tenant[tenant] + [g for g in global_routes if g.path not in {r.path for r in per_tenant[tenant]}]
            out += _server(e, f"{tenant}.{zone}", routes, default=False)
    out.append("}")
    return "\n".join(out) + "\n"


def _server(e: Edge, name: str, routes: Iterable[PathRoute], default: bool) -> list[str]:
    zone = e.tenant_zone
    flag = " default_server" if default else ""
    lines = ["    server {", f"        listen {e.listen_http}{flag};"]
    if e.cert and e.key:
        lines += [f"        listen {e.listen_https} ssl{flag};", f"        ssl_certificate {e.cert};",
                  f"        ssl_certificate_key {e.key};", "        ssl_protocols TLSv1.2 TLSv1.3;"]
    lines += [f"        server_name {name};",
              '        if ($ctm_tenant = "") { return 421; }',
              "        proxy_set_header Host $host;", "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
              "        proxy_set_header X-Forwarded-Proto $scheme;", "        proxy_http_version 1.1;",
              "        location / {",
              f"            proxy_pass http://$ctm_tenant.{zone}.internal:{e.backend_port}$request_uri;",
              "        }"]
    for r in sorted(routes, key=lambda r: r.path):
        lines.append(f"        location {r.path} {{")
        lines += [f"            allow {c};" for c in r.allow]
        lines += [f"            deny {c};" for c in r.deny]
        if r.allow:
            lines.append("            deny all;")
        target = f"http://{r.service}.$ctm_tenant.{zone}.internal:{e.backend_port}"
        if r.strip:
            lines += [f"            rewrite ^{re.escape(r.path)}(.*)$ /$1 break;", f"            proxy_pass {target};"]
        else:
            lines.append(f"            proxy_pass {target}$request_uri;")
        lines.append("        }")
    lines.append("    }")
    return lines


def routes_from_rows(rows: Iterable[Sequence[object]]) -> tuple[PathRoute, ...]:
    """Path routes as the store holds them, through `path_route` again: a row
    written by anything else than the CLI cannot break or inject into the config."""
    out = []
    for r in rows:
        try:
            allow, deny = json.loads(str(r[4])), json.loads(str(r[5]))
            if not (isinstance(allow, list) and isinstance(deny, list)):
                raise ValueError("allow and deny must be lists")
            out.append(path_route(r[1], r[2], r[0] or "", bool(r[3]), allow, deny))  # type: ignore[arg-type]
        except (InputError, ValueError, TypeError, RecursionError) as exc:
            raise InputError(f"damaged path route in the store ({str(r[0])[:40]!r} {str(r[1])[:80]!r}): "
                             f"{str(exc)[:200]}") from None
    return tuple(out)
