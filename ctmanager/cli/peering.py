"""`ctmanager peering list|show|config`: cloud peerings of the DC template (a VPC over
a dedicated link or an IPsec tunnel, BGP on a border router) and their rendered files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..dc.model import DcTemplate, rack_name
from ..errors import CtmError
from ..files import preflight, write_atomic
from ..store import queries
from .common import Registry, out_path, store_of, want_json
from .output import emit_json, table

DEFAULT_SOCKET = "/run/bird/bird.ctl"


def register(reg: Registry) -> None:
    cmd, group = reg.cmd, reg.group
    g = group("peering", "cloud peerings: a VPC as one more network segment (VLAN or IPsec, BGP with BIRD)")
    cmd(g, "list", cmd_list, "the DC template's peerings, one line each", "ctmanager peering list")
    p = cmd(g, "show", cmd_show, "one peering, whole", "ctmanager peering show aws-vpc1-a")
    p.add_argument("name")
    p = cmd(g, "config", cmd_config, "write each border router's files: bird.conf, network/ (systemd-networkd), "
            "swanctl.conf (IPsec); and routes/rack-N.txt, the routes each rack's gateway needs to the clouds", "ctmanager peering config /srv/border-configs --border border-1")
    p.add_argument("out", type=out_path, help="a folder: OUT/<border>/bird.conf, OUT/<border>/network/…")
    p.add_argument("--border", help="only this border router (default: every one)")
    p = cmd(g, "status", cmd_status, "what BIRD says of each peering: session up/down since when, routes accepted "
            "and refused", "ctmanager peering status --socket /run/bird/bird.ctl")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--socket", help="the border's BIRD control socket (default /run/bird/bird.ctl; run this "
                       "on the border router)")
    where.add_argument("--lab-dir", metavar="DIR", help="the lab's folder: every border router of the lab")
    p.add_argument("--border", help="only this border router's peerings")


def _dc(args: argparse.Namespace) -> DcTemplate:
    with store_of(args) as store:
        return queries.dc_template(store)


def cmd_list(args: argparse.Namespace) -> int:
    from ..peering import files
    dc = _dc(args)
    if want_json(args):
        emit_json([files.as_dict(p) for p in dc.peerings])
        return 0
    if not dc.peerings:
        print("no peerings in the DC template ([[peerings]], see README: Cloud peering)")
        return 0
    table(("NAME", "KIND", "BORDER", "LINK", "LOCAL", "REMOTE", "PEER-AS", "ACCEPT", "RACKS", "BFD"),
          [(p.name, p.kind, p.border, p.link, str(p.local), str(p.remote), p.peer_asn,
            ",".join(map(str, p.accept)), ",".join(rack_name(s) for s in p.racks),
            f"{p.bfd.interval_ms}ms x{p.bfd.multiplier}" if p.bfd else "-") for p in dc.peerings])
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from ..peering import files
    d = files.as_dict(files.find(_dc(args), args.name))
    if want_json(args):
        emit_json(d)
        return 0
    for key, value in d.items():
        if isinstance(value, list):
            value = ", ".join(map(str, value)) or "-"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={val}" for k, val in value.items()) or "-"
        print(f"{key + ':':<15} {'-' if value is None else value}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from ..peering import files
    dc = _dc(args)
    borders = [files.border(dc, args.border)] if args.border else list(dc.borders)
    if not borders:
        raise CtmError("the DC template has no border routers ([borders.NAME], see README: Cloud peering)")
    # everything rendered before anything is written: a bad template leaves OUT as it was
    todo = {f"{b.name}/{rel}": text for b in borders for rel, text in files.border_files(dc, b).items()}
    if not args.border:
        todo.update(files.rack_routes(dc))
    for rel in todo:
        preflight(Path(args.out) / rel)  # a link at any name refuses the command before any write
    written = []
    for rel, text in todo.items():
        path = Path(args.out) / rel
        try:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            write_atomic(path, text.encode(), 0o644, under=args.out, make_parents=True)  # no link below OUT
        except OSError as exc:
            raise CtmError(f"{path}: {exc.strerror}") from None
        written.append(str(path))
    if want_json(args):
        emit_json({"written": written})
    else:
        for name in written:
            sys.stdout.write(f"wrote {name}\n")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from ..peering import files, status
    dc = _dc(args)
    borders = [files.border(dc, args.border)] if args.border else list(dc.borders)
    if not args.lab_dir and len(borders) > 1:
        raise CtmError("one socket is one border router: name it with --border "
                       f"({', '.join(b.name for b in borders)}), or use --lab-dir in the lab")
    rows = []
    for b in borders:
        if args.lab_dir:
            from ..lab import borders as labborders
            from ..lab import layout
            sock = str(labborders.socket(layout.Lab(args.lab_dir), b.name))
        else:
            sock = args.socket or DEFAULT_SOCKET
        sessions = status.read(sock)
        for p in dc.peerings:
            if p.border != b.name:
                continue
            s = status.of(sessions, p.name)
            rows.append({"peering": p.name, "border": b.name, "state": s.bgp_state if s else "missing",
                         "up": bool(s and s.up), "since": s.since if s else None, "imported": s.imported if s else 0,
                         "exported": s.exported if s else 0, "received": s.received if s else 0,
                         "refused": s.filtered if s else 0,
                         "info": (s.info if s else "no such protocol in BIRD: is the rendered config loaded?")})
    if want_json(args):
        emit_json(rows)
    else:
        table(("PEERING", "BORDER", "STATE", "SINCE", "IMPORTED", "EXPORTED", "REFUSED", "INFO"),
              [(r["peering"], r["border"], r["state"], r["since"] or "-", r["imported"], r["exported"], r["refused"],
                r["info"] or "-") for r in rows])
    return 0 if rows and all(r["up"] for r in rows) else 1
