"""`ctmanager socks allow|deny|list|config`: outbound SOCKS 5 (Dante) per-application ACLs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CtmError
from ..files import write_atomic
from ..store import Store, queries
from ..store import proxies as proxyrows
from .common import Registry, integer_in, out_path, store_of, want_json
from .output import emit_json, table

if TYPE_CHECKING:
    from ..proxies import dante


def register(reg: Registry) -> None:
    cmd, group = reg.cmd, reg.group
    socks = group("socks", "outbound SOCKS 5 (Dante): which application may reach which destinations")
    for name, func, what in (("allow", cmd_allow, "let an app reach a destination"),
                             ("deny", cmd_deny, "take that back")):
        p = cmd(socks, name, func, what, f"ctmanager socks {name} jira 203.0.113.0/24 --port 443")
        p.add_argument("app")
        p.add_argument("dest", metavar="CIDR")
        p.add_argument("--port", type=integer_in(0, 65535), default=0, help="one port (default: any)")
    cmd(socks, "list", cmd_list, "list the ACLs", "ctmanager socks list")
    p = cmd(socks, "config", cmd_config, "write the proxy's sockd.conf", "ctmanager socks config /etc/danted.conf "
            "--listen 10.101.2.4:1080 --external 10.101.2.4")
    p.add_argument("out", type=out_path)
    p.add_argument("--listen", default="0.0.0.0:1080", metavar="IP:PORT")
    p.add_argument("--external", required=True, metavar="IP", help="the address outbound connections leave from")


def cmd_allow(args: argparse.Namespace) -> int:
    from ..proxies import dante
    a = dante.acl(args.app, args.dest, args.port)
    with store_of(args) as store:
        proxyrows.socks_allow(store, a.app, a.dest, a.port)
    if not want_json(args):
        print(f"{a.app} may reach {a.dest} port {a.port or 'any'}")
    return 0


def cmd_deny(args: argparse.Namespace) -> int:
    from ..proxies import dante
    a = dante.acl(args.app, args.dest, args.port)
    with store_of(args) as store:
        proxyrows.socks_deny(store, a.app, a.dest, a.port)
    if not want_json(args):
        print(f"{a.app} may no longer reach {a.dest} port {a.port or 'any'}")
    return 0


def _acls(store: Store) -> list[dante.Acl]:
    from ..proxies import dante
    return [dante.acl(app, dest, port) for app, dest, port in proxyrows.socks_acls(store)]  # checked again: a store is a file


def cmd_list(args: argparse.Namespace) -> int:
    with store_of(args) as store:
        acls = _acls(store)
    if want_json(args):
        emit_json([a.__dict__ for a in acls])
    else:
        table(("APP", "DEST", "PORT"), [(a.app, a.dest, a.port or "any") for a in acls])
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from ..proxies import dante
    with store_of(args) as store:
        cts = [(c.hostname, c.ip, c.apps) for c in queries.cts(store)]
        text = dante.render(_acls(store), cts, args.listen, args.external)
    try:
        write_atomic(Path(args.out), text.encode(), 0o644)
    except OSError as exc:
        raise CtmError(f"{args.out}: {exc.strerror}") from None
    if want_json(args):
        emit_json({"file": args.out})
    else:
        print(f"wrote {args.out}; check: danted -V -f {args.out}")
    return 0
