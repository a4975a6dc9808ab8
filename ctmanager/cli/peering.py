"""`ctmanager peering list|show|config`: cloud peerings of the DC template (a VPC over
a dedicated link or an IPsec tunnel, BGP on a border router) and their rendered files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..dc.model import DcTemplate, rack_name
from ..errors import CtmError
from ..files import write_atomic
from ..store import queries
from .common import Registry, store_of, want_json
from .output import emit_json, table


def register(reg: Registry) -> None:
    cmd, group = reg.cmd, reg.group
    g = group("peering", "cloud peerings: a VPC as one more network segment (VLAN or IPsec, BGP with BIRD)")
    cmd(g, "list", cmd_list, "the DC template's peerings, one line each", "ctmanager peering list")
    p = cmd(g, "show", cmd_show, "one peering, whole", "ctmanager peering show aws-vpc1-a")
    p.add_argument("name")
    p = cmd(g, "config", cmd_config, "write each border router's files: bird.conf, network/ (systemd-networkd), "
            "swanctl.conf (IPsec)", "ctmanager peering config /srv/border-configs --border border-1")
    p.add_argument("out", help="a folder: OUT/<border>/bird.conf, OUT/<border>/network/…")
    p.add_argument("--border", help="only this border router (default: every one)")


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
    out, written = Path(args.out), []
    for b in borders:
        for rel, text in files.border_files(dc, b).items():
            path = out / b.name / rel
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, text.encode(), 0o644)
            except OSError as exc:
                raise CtmError(f"{path}: {exc.strerror}") from None
            written.append(str(path))
    if want_json(args):
        emit_json({"written": written})
    else:
        for name in written:
            sys.stdout.write(f"wrote {name}\n")
    return 0
