"""`ctmanager rack install|list|key`: racks installed into slots of the DC template,
and their keys rotated (manager/keyroll.py)."""

from __future__ import annotations

import argparse

from ..store import queries
from .common import Registry, editing, manager_setup, parse_rack, store_of, want_json, with_config
from .output import emit_json, table


def register(reg: Registry) -> None:
    racks = reg.group("rack", "racks installed into slots of the DC template")
    p = reg.cmd(racks, "install", cmd_rack_install, "install a delivered rack into a free slot",
                "ctmanager rack install 102 rack-102.toml")
    p.add_argument("slot", help="slot number or rack name (102 or rack-102)")
    p.add_argument("manifest", help="delivery manifest (TOML): [[nodes]] position, sku, serial, mac; a path, or "
                   "the name of one shipped with ctmanager (rack-102: templates/dc/manifests/rack-102.toml)")
    reg.cmd(racks, "list", cmd_rack_list, "list installed racks", "ctmanager rack list --json")
    p = with_config(reg.cmd(
        racks, "key", cmd_rack_key, "rotate the rack's report key with no report refused and no HN fenced: "
        "status, then stage (a new key beside the old everywhere), switch (everyone signs with it), retire (the old "
        "one refused); each step checks every machine first and may be run again", "ctmanager rack key stage"))
    p.add_argument("step", choices=("status", "stage", "switch", "retire"),
                   help="status | stage | switch | retire, in that order (see README: Rotating a rack key)")
    p.add_argument("--local", action="store_true",
                   help="this manager's key file only: the rack's other managers (their HNs are done from the first)")


def cmd_rack_install(args: argparse.Namespace) -> int:
    from ..dc import manifest
    from ..paths import find_manifest

    slot = parse_rack(args.slot, "slot")
    path = find_manifest(args.manifest)
    with store_of(args) as store:
        dc = queries.dc_template(store)
        nodes = manifest.load(path, dc)
    with editing(args) as (store, inv):
        done = inv.install_rack(slot, nodes, str(path))
    if want_json(args):
        emit_json({"slot": done.slot, "rack": done.name, "network": done.network,
                   "nodes": [{"hostname": h, "role": r, "ip": ip} for h, r, ip in done.nodes],
                   "service_cts": [{"ctid": c.ctid, "hostname": c.hostname, "ip": c.ip} for c in done.service_cts]})
    else:
        print(f"installed {done.name} in slot {done.slot}: network {done.network}")
        table(("HOSTNAME", "ROLE", "IP"), done.nodes)
        table(("CTID", "HOSTNAME", "IP"), [(c.ctid, c.hostname, c.ip) for c in done.service_cts])
    return 0

def cmd_rack_list(args: argparse.Namespace) -> int:
    with store_of(args) as store:
        dc = queries.dc_template(store)
        rows = [{**r, "realm": dc.realm_of(int(r["slot"])) or None} for r in queries.racks(store)]
    if want_json(args):
        emit_json(rows)
    else:
        table(("SLOT", "RACK", "REALM", "NETWORK", "HNS", "STORAGE", "TENANTS", "CTS"),
              [(r["slot"], r["name"], r["realm"] or "-", r["network"], r["hns"], r["storage"], r["tenants"], r["cts"])
               for r in rows])
    return 0


def cmd_rack_key(args: argparse.Namespace) -> int:
    from ..manager import keyroll, passes

    config, store, _dc = manager_setup(args)
    try:
        executor = None if args.local else passes.executor_for(store, config)
        try:
            holders = keyroll.run_step(store, config, executor, args.step,
                                       (lambda line: None) if want_json(args) else print)
        finally:
            if executor is not None:
                executor.close()
    finally:
        store.close()
    if want_json(args):
        emit_json([{"machine": h.name, **h.ids, "error": h.error or None} for h in holders])
    elif args.step == "status":
        table(("MACHINE", "CURRENT", "NEXT", "PREV"),
              [(h.name, h.ids.get("current", "-"), h.ids.get("next", "-"), h.ids.get("prev", h.error or "-"))
               for h in holders])
    return 0
