"""Dante's sockd.conf for the outbound SOCKS 5 proxies, rendered from the store.

Every outbound connection of a CT goes through the rack's SOCKS proxy (apps find
it by the routing name `socks`). Per application ACLs: an app may reach the
destinations allowed for it, from the address of every CT that runs it; all
else is blocked and logged. No authentication method: the CT's address, on the
rack network, is the identity (Debian's binary is `danted`; `danted -V -f FILE`
checks a config)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .. import validate as v
from ..errors import InputError
from ..validate import hostport

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
    ext = str(v.ipv4(external, "--external"))
    by_app: dict[str, list[Acl]] = {}
    for a in sorted(set(acls)):
        by_app.setdefault(a.app, []).append(a)
    lines = ["# Outbound SOCKS 5, written by ctmanager: do not edit", "logoutput: stderr",
             f"internal: {host} port = {port}", f"external: {ext}", "clientmethod: none", "socksmethod: none",
             "user.privileged: root", "user.unprivileged: nobody", "",
             "client pass { from: 0.0.0.0/0 to: 0.0.0.0/0 }", ""]
    for hostname, ip, apps in sorted(cts):
        src = str(v.ipv4(ip, f"CT {hostname}: ip"))
        for app in sorted(set(apps) & by_app.keys()):
            lines.append(f"# {app} in {hostname}")
            for a in by_app[app]:
                to = f"{a.dest}" + (f" port = {a.port}" if a.port else "")
                # one keyword per line: `command:` and `log:` each take a list
                lines += [f"socks pass {{ from: {src}/32 to: {to}", "    command: connect",
                          "    log: connect error", "}"]
    lines += ["", "# everything else", "socks block { from: 0.0.0.0/0 to: 0.0.0.0/0", "    log: connect error", "}"]
    return "\n".join(lines) + "\n"
