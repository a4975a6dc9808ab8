"""Dante's sockd.conf for the outbound SOCKS 5 proxies, rendered from the store.

Every outbound connection of a CT goes through the rack's SOCKS proxy (apps find
it by the routing name `socks`). Per application ACLs: an app may reach the
destinations allowed for it, from the address of every CT that runs it; all
else is blocked and logged. No authentication method: the CT's address, on the
rack network, is the identity (Debian's binary is `danted`; `danted -V -f FILE`
checks a config)."""

from __future__ import annotations

import argparse
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .. import queries
from ..agent.config import hostport
from ..cli.commands import _json, _store
from ..cli.output import emit_json, table
from ..errors import CtmError, InputError, NotFoundError
from ..render.files import write_atomic

_APP = re.compile(r"[a-z0-9]([a-z0-9_-]{0,30}[a-z0-9])?")


@dataclass(frozen=True, order=True)
class Acl:
    app: str
    dest: str  # CIDR
    port: int = 0  # 0 = any


def acl(app: str, dest: str, port: int = 0) -> Acl:
    if not _APP.fullmatch(app):
        raise InputError(f"an app name is a short label like jira (got {app!r})")
    try:
        net = str(ipaddress.ip_network(dest, strict=False))
    except ValueError:
        raise InputError(f"{dest!r} is not an IP network (CIDR)") from None
    if not 0 <= port <= 65535:
        raise InputError(f"port must be 0 (any) to 65535 (got {port})")
    return Acl(app, net, port)


def render(acls: Iterable[Acl], cts: Iterable[tuple[str, str, tuple[str, ...]]], listen: str, external: str) -> str:
    """`cts`: (hostname, address, apps) of every CT."""
    host, port = hostport(listen, "--listen")
    ext = str(ipaddress.ip_address(external))
    by_app: dict[str, list[Acl]] = {}
    for a in sorted(set(acls)):
        by_app.setdefault(a.app, []).append(a)
    lines = ["# Outbound SOCKS 5, written by ctmanager: do not edit", "logoutput: stderr",
             f"internal: {host} port = {port}", f"external: {ext}", "clientmethod: none", "socksmethod: none",
             "user.privileged: root", "user.unprivileged: nobody", "",
             "client pass { from: 0.0.0.0/0 to: 0.0.0.0/0 }", ""]
    for hostname, ip, apps in sorted(cts):
        src = str(ipaddress.ip_address(ip))
        for app in sorted(set(apps) & by_app.keys()):
            lines.append(f"# {app} in {hostname}")
            for a in by_app[app]:
                to = f"{a.dest}" + (f" port = {a.port}" if a.port else "")
                # one keyword per line: `command:` and `log:` each take a list
                lines += [f"socks pass {{ from: {src}/32 to: {to}", "    command: connect",
                          "    log: connect error", "}"]
    lines += ["", "# everything else", "socks block { from: 0.0.0.0/0 to: 0.0.0.0/0", "    log: connect error", "}"]
    return "\n".join(lines) + "\n"


def register(sub: argparse._SubParsersAction, helpers: dict[str, Any]) -> None:
    cmd, group = helpers["cmd"], helpers["group"]
    socks = group("socks", "outbound SOCKS 5 (Dante): which application may reach which destinations")
    for name, func, what in (("allow", cmd_allow, "let an app reach a destination"),
                             ("deny", cmd_deny, "take that back")):
        p = cmd(socks, name, func, what, f"ctmanager socks {name} jira 203.0.113.0/24 --port 443")
        p.add_argument("app")
        p.add_argument("dest", metavar="CIDR")
        p.add_argument("--port", type=int, default=0, help="one port (default: any)")
    cmd(socks, "list", cmd_list, "list the ACLs", "ctmanager socks list")
    p = cmd(socks, "config", cmd_config, "write the proxy's sockd.conf", "ctmanager socks config /etc/danted.conf "
            "--listen 10.101.2.4:1080 --external 10.101.2.4")
    p.add_argument("out")
    p.add_argument("--listen", default="0.0.0.0:1080", metavar="IP:PORT")
    p.add_argument("--external", required=True, metavar="IP", help="the address outbound connections leave from")


def cmd_allow(args: argparse.Namespace) -> int:
    a = acl(args.app, args.dest, args.port)
    with _store(args) as store, store.transaction():
        store.db.execute("INSERT OR IGNORE INTO socks_acls (app, dest, port) VALUES (?, ?, ?)", (a.app, a.dest, a.port))
        store.event("socks.allow", a.app, f"{a.dest}:{a.port or '*'}")
    if not _json(args):
        print(f"{a.app} may reach {a.dest} port {a.port or 'any'}")
    return 0


def cmd_deny(args: argparse.Namespace) -> int:
    a = acl(args.app, args.dest, args.port)
    with _store(args) as store, store.transaction():
        cur = store.db.execute("DELETE FROM socks_acls WHERE app = ? AND dest = ? AND port = ?", (a.app, a.dest, a.port))
        if cur.rowcount == 0:
            raise NotFoundError(f"{a.app} has no ACL for {a.dest} port {a.port or 'any'} (see: ctmanager socks list)")
    if not _json(args):
        print(f"{a.app} may no longer reach {a.dest} port {a.port or 'any'}")
    return 0


def _acls(store: Any) -> list[Acl]:
    return [Acl(r[0], r[1], r[2]) for r in store.query("SELECT app, dest, port FROM socks_acls ORDER BY app, dest")]


def cmd_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        acls = _acls(store)
    if _json(args):
        emit_json([a.__dict__ for a in acls])
    else:
        table(("APP", "DEST", "PORT"), [(a.app, a.dest, a.port or "any") for a in acls])
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    with _store(args) as store:
        cts = [(c.hostname, c.ip, c.apps) for c in queries.cts(store)]
        text = render(_acls(store), cts, args.listen, args.external)
    try:
        write_atomic(Path(args.out), text.encode(), 0o644)
    except OSError as exc:
        raise CtmError(f"{args.out}: {exc.strerror}") from None
    if _json(args):
        emit_json({"file": args.out})
    else:
        print(f"wrote {args.out}; check: danted -V -f {args.out}")
    return 0
