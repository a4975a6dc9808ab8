"""`ctmanager dns configure|diff|sync|verify|bind-config`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import CtmError
from ..store import dns as dnsrows
from ..store import queries
from .common import Registry, out_path, port, seconds_in, store_of, want_json
from .output import emit_json


def register(reg: Registry) -> None:
    cmd, group = reg.cmd, reg.group
    dns = group("dns", "publish CT addresses and tenant routing CNAMEs to the DNS server (RFC 2136 + TSIG)")
    p = cmd(dns, "configure", cmd_dns_configure, "set the DNS server and TSIG key every edit publishes to",
            "ctmanager dns configure --server 10.100.0.53:53 --key-file /etc/ctmanager/tsig.key")
    p.add_argument("--server", required=True, metavar="IP:PORT")
    p.add_argument("--key-file", required=True, help="as `tsig-keygen -a hmac-sha256 NAME` writes it")
    cmd(dns, "diff", cmd_dns_diff, "what the store implies and is not published yet (pending), and conflicts",
        "ctmanager dns diff")
    p = cmd(dns, "sync", cmd_dns_sync, "publish what is pending", "ctmanager dns sync --dry-run")
    p.add_argument("--dry-run", action="store_true", help="print the changes, send nothing")
    p.add_argument("--retry", type=seconds_in(0, 86400), default=0.0, metavar="SECONDS",
                   help="while the server is unreachable, retry with backoff for up to SECONDS")
    p = cmd(dns, "verify", cmd_dns_verify, "read the zones (AXFR), put drifted records of ours back, report",
            "ctmanager dns verify")
    p.add_argument("--no-repair", action="store_true", help="only report drift")
    p = cmd(dns, "bind-config", cmd_dns_bind_config, "write a BIND 9 config for the DC's zones (and a TSIG key)",
            "ctmanager dns bind-config /etc/ctmanager/bind --listen 10.100.0.53")
    p.add_argument("out", type=out_path)
    p.add_argument("--listen", default="127.0.0.1",
                   help="address(es) named listens on, comma-separated (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=53)


def cmd_dns_configure(args: argparse.Namespace) -> int:
    from ..dnsroutes import sync  # dnspython: only for the dns commands

    with store_of(args) as store:
        sync.configure(store, args.server, args.key_file)
        pending = sync.sync(store, sync.require_server(store), dry_run=True).pending
    if want_json(args):
        emit_json({"server": args.server, "pending": len(pending)})
    else:
        print(f"DNS server {args.server}; {len(pending)} change(s) pending (ctmanager dns sync sends them)")
    return 0


def cmd_dns_diff(args: argparse.Namespace) -> int:
    from ..dnsroutes import sync  # dnspython: only for the dns commands

    with store_of(args) as store:
        report = sync.sync(store, None, dry_run=True)
        conflicts = dnsrows.conflicts(store)
    if want_json(args):
        emit_json({"pending": [str(c) for c in report.pending],
                   "conflicts": [{"name": r[0], "detail": r[1]} for r in conflicts],
                   "collisions": report.collisions})
    else:
        for c in report.pending:
            print(c)
        for r in conflicts:
            print(f"! {r[0]}: {r[1]}")
        for why in report.collisions:  # two record sets of ours claim one name: the second is left out
            print(f"! COLLISION {why}")
        if not report.pending and not conflicts and not report.collisions:
            print("nothing pending")
    return 0


def cmd_dns_sync(args: argparse.Namespace) -> int:
    from ..dnsroutes import sync  # dnspython: only for the dns commands

    deadline = time.monotonic() + max(args.retry, 0.0)
    delay = 0.5
    with store_of(args) as store:
        server = None if args.dry_run else sync.require_server(store)
        while True:
            report = sync.sync(store, server, dry_run=args.dry_run)
            if not report.error or time.monotonic() + delay > deadline:
                break
            sys.stderr.write(f"dns: {report.error}; retrying in {delay:g}s\n")
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
    if want_json(args):
        emit_json({"applied": [str(c) for c in report.applied], "pending": [str(c) for c in report.pending],
                   "conflicts": [why for _, why in report.conflicts], "error": report.error,
                   "messages": report.messages, "collisions": report.collisions})
    else:
        for c in report.pending if args.dry_run else report.applied:
            print(c)
        for _, why in report.conflicts:
            print(f"CONFLICT {why}")
        for why in report.collisions:
            print(f"COLLISION {why} (left out)")
        if args.dry_run:
            print(f"{len(report.pending)} change(s) would be sent")
        elif report.error:
            print(f"{len(report.pending)} change(s) PENDING: {report.error}")
        else:
            print(f"published {len(report.applied)} change(s) in {report.messages} message(s); "
                  f"{len(report.conflicts)} conflict(s)")
    return 1 if report.error or report.conflicts or report.collisions else 0


def cmd_dns_verify(args: argparse.Namespace) -> int:
    from ..dnsroutes import sync  # dnspython: only for the dns commands

    with store_of(args) as store:
        report = sync.verify(store, sync.require_server(store), repair=not args.no_repair)
    if want_json(args):
        emit_json({"drift": report.drift, "repaired": [str(c) for c in report.applied],
                   "conflicts": [why for _, why in report.conflicts]})
    else:
        for line in report.drift:
            print(f"drift: {line}")
        for _, why in report.conflicts:
            print(f"CONFLICT {why}")
        print(f"{len(report.drift)} drifted record set(s)" +
              ("" if args.no_repair else f", {len(report.applied)} repaired"))
    return 1 if report.drift and args.no_repair or report.conflicts else 0


def cmd_dns_bind_config(args: argparse.Namespace) -> int:
    from ..dnsroutes import bind  # dnspython: only for the dns commands

    with store_of(args) as store:
        dc = queries.dc_template(store)
    try:
        files = bind.render(dc, Path(args.out), args.listen, args.port)
    except OSError as exc:
        raise CtmError(f"{args.out}: {exc.strerror}") from None
    if want_json(args):
        emit_json({k: str(v) for k, v in files.items()})
    else:
        print(f"wrote {files['named.conf']} and zone skeletons; TSIG key {files['key']}\n"
              f"run: named -g -c {files['named.conf']}")
    return 0
