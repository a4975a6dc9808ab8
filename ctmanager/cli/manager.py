"""`ctmanager manager status`: who leads each rack, and who stands by.

Each `ctmanager run` checks in to the store every ttl/3 (store/lease.py); the
leader also holds the rack's lease. Ages are on the store's clock.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

from ..errors import NotFoundError, StoreError
from ..store import lease as leases
from ..store import queries
from .common import Registry, parse_rack, store_of, want_json
from .output import age, emit_json, table


def register(reg: Registry) -> None:
    managers = reg.group("manager", "the rack managers: which one leads, which stand by")
    p = reg.cmd(managers, "status", cmd_manager_status,
                "per rack: each manager's name, role (leader/standby/down), epoch, lease age, last report heard",
                "ctmanager manager status --rack 101")
    p.add_argument("--rack", help="only this rack (rack-101 or 101)")


def cmd_manager_status(args: argparse.Namespace) -> int:
    rack = parse_rack(args.rack, "--rack") if args.rack else None
    with store_of(args) as store:
        if not queries.initialised(store):
            raise StoreError(f"{store.where}: store is not initialised; run: ctmanager init TEMPLATE")
        slots = [r["slot"] for r in queries.racks(store) if rack is None or r["slot"] == rack]
        if rack is not None and not slots:
            raise NotFoundError(f"no rack-{rack} installed (ctmanager rack list)", where="--rack")
        views = leases.view(store, rack)
    if want_json(args):
        emit_json([{"rack": slot, "leader": next((v.name for v in views if v.rack == slot and v.role == "leader"),
                                                 None),
                    "managers": [{k: val for k, val in asdict(v).items() if k != "rack"}
                                 for v in views if v.rack == slot]} for slot in slots])
        return 0
    rows: list[tuple[object, ...]] = []
    for slot in slots:
        mine = [v for v in views if v.rack == slot]
        if not mine:
            rows.append((f"rack-{slot}", "-", "none", None, None, None, None, None, "no manager has run"))
        for v in mine:
            rows.append((f"rack-{slot}", v.name, v.role, v.epoch or None, age(v.lease_age), age(v.heard),
                         age(v.checked_in), v.version or None, v.why or v.detail))
    table(("RACK", "MANAGER", "ROLE", "EPOCH", "LEASE_AGE", "LAST_REPORT", "CHECKED_IN", "VERSION", "DETAIL"), rows)
    return 0
