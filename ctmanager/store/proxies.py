"""The edge proxies' configuration: nginx path routes and outbound SOCKS ACLs.
Each write checks what it refers to inside its own transaction (check-then-act)."""

from __future__ import annotations

import json

from ..errors import NotFoundError
from .db import Store

# (tenant, path, service, strip, allow JSON, deny JSON), as nginx.routes_from_rows reads them
PathRouteRow = tuple[str, str, str, int, str, str]


def path_routes(store: Store) -> list[PathRouteRow]:
    return [tuple(r) for r in store.query(
        "SELECT tenant, path, service, strip, allow, deny FROM path_routes ORDER BY tenant, path")]


def set_path_route(store: Store, tenant: str, path: str, service: str, strip: bool,
                   allow: tuple[str, ...], deny: tuple[str, ...]) -> None:
    with store.transaction():
        if tenant and store.one("SELECT 1 FROM tenants WHERE name = ?", (tenant,)) is None:
            raise NotFoundError(f"no tenant {tenant!r} (see: ctmanager tenant list)")
        store.execute(
            "INSERT INTO path_routes (tenant, path, service, strip, allow, deny) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(tenant, path) DO UPDATE SET service = excluded.service, strip = excluded.strip, "
            "allow = excluded.allow, deny = excluded.deny",
            (tenant, path, service, int(strip), json.dumps(list(allow)), json.dumps(list(deny))))
        store.event("edge.path", f"{tenant or '*'}{path}", service)


def rm_path_route(store: Store, tenant: str, path: str) -> None:
    with store.transaction():
        cur = store.execute("DELETE FROM path_routes WHERE tenant = ? AND path = ?", (tenant, path))
        if cur.rowcount == 0:
            raise NotFoundError(f"no path route {path!r}{' for ' + tenant if tenant else ''}")
        store.event("edge.path.rm", f"{tenant or '*'}{path}")


def socks_acls(store: Store) -> list[tuple[str, str, int]]:
    return [(r[0], r[1], int(r[2])) for r in store.query("SELECT app, dest, port FROM socks_acls ORDER BY app, dest")]


def socks_allow(store: Store, app: str, dest: str, port: int) -> None:
    with store.transaction():
        store.execute("INSERT INTO socks_acls (app, dest, port) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                      (app, dest, port))
        store.event("socks.allow", app, f"{dest}:{port or '*'}")


def socks_deny(store: Store, app: str, dest: str, port: int) -> None:
    with store.transaction():
        cur = store.execute("DELETE FROM socks_acls WHERE app = ? AND dest = ? AND port = ?", (app, dest, port))
        if cur.rowcount == 0:
            raise NotFoundError(f"{app} has no ACL for {dest} port {port or 'any'} (see: ctmanager socks list)")
        store.event("socks.deny", app, f"{dest}:{port or '*'}")
