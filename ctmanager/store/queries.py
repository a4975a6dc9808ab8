"""Read side of the store: rows -> typed values, and the status view."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..dc import template
from ..dc.model import Ct, DcTemplate, Node, Route, rack_name
from ..errors import InputError, NotFoundError, StoreError
from ..validate import is_digits
from .backups import Known
from .db import Row, Store
from .rows import ct_from_row, node_from_row, route_from_row

CT_COLUMNS = "ct_id, hostname, rack, tenant, service, env, ip, storage, admst, memory, swap, disk, cpus, cpuunits, cpulimit, apps"


def dc_template(store: Store) -> DcTemplate:
    """The DC template the store was initialised with, parsed once per store
    handle (it never changes after init; a DNS edit used to parse it four times)."""
    text = store.get_meta("template")
    if text is None:
        raise StoreError(f"{store.where}: store is not initialised; run: ctmanager init TEMPLATE")
    key = ("dc_template", text)  # the text itself: one copy kept, a string compare per call
    dc: DcTemplate | None = store.cache.get(key)
    if dc is None:
        file = store.get_meta("template_file") or "template"
        dc = store.cache[key] = template.loads(text.encode(), file, Path(file).parent, stored=True)
    return dc


def cts(store: Store, *, rack: int | None = None, tenant: str | None = None) -> list[Ct]:
    sql = f"SELECT {CT_COLUMNS} FROM cts"
    where: list[str] = []
    params: list[int | str] = []
    if rack is not None:
        where.append("rack = ?")
        params.append(rack)
    if tenant is not None:
        where.append("tenant = ?")
        params.append(tenant)
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [ct_from_row(r) for r in store.query(sql + " ORDER BY ct_id", tuple(params))]


HISTORY_FIELDS = ("at", "kind", "hn", "reason", "state", "detail", "finished_at", "epoch")


def ct_history(store: Store, ctid: int, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` intents of a CT from the journal (oldest first)."""
    rows = store.query("SELECT at, kind, hn, reason, state, detail, finished_at, epoch FROM journal "
                       "WHERE ct_id = ? ORDER BY id DESC LIMIT ?", (ctid, limit))
    return [dict(zip(HISTORY_FIELDS, tuple(r))) for r in reversed(rows)]


def find_ct(store: Store, ref: str) -> Ct:
    """A CT by CTID or hostname."""
    if is_digits(ref):  # a number is a CTID (hostnames are never all digits)
        row = store.one(f"SELECT {CT_COLUMNS} FROM cts WHERE ct_id = ?", (int(ref),)) if len(ref) <= 10 else None
    else:
        row = store.one(f"SELECT {CT_COLUMNS} FROM cts WHERE hostname = ?", (ref,))
    if row is None:
        raise NotFoundError(f"no CT {ref[:80]!r} (give a CTID or hostname; see: ctmanager ct list)")
    return ct_from_row(row)


def nodes(store: Store, *, rack: int | None = None) -> list[Node]:
    if rack is None:
        rows = store.query("SELECT * FROM nodes ORDER BY rack, position")
    else:
        rows = store.query("SELECT * FROM nodes WHERE rack = ? ORDER BY position", (rack,))
    return [node_from_row(r) for r in rows]


def racks(store: Store) -> list[dict[str, Any]]:
    rows = store.query(
        """SELECT r.slot, r.name, r.network, r.manifest,
                  (SELECT count(*) FROM nodes n WHERE n.rack = r.slot AND n.role = 'compute') AS hns,
                  (SELECT count(*) FROM nodes n WHERE n.rack = r.slot AND n.role = 'storage') AS storage,
                  (SELECT count(*) FROM tenants t WHERE t.rack = r.slot) AS tenants,
                  (SELECT count(*) FROM cts c WHERE c.rack = r.slot) AS cts
           FROM racks r ORDER BY r.slot"""
    )
    return [dict(r) for r in rows]


def tenants(store: Store) -> list[dict[str, Any]]:
    rows = store.query(
        """SELECT t.name, t.rack, t.realm, c.ct_id AS core_ctid, c.ip AS core_ip, c.apps,
                  (SELECT count(*) FROM routes r WHERE r.tenant = t.name) AS routes,
                  (SELECT m.phase FROM moves m WHERE m.tenant = t.name AND m.finished_at IS NULL) AS moving
           FROM tenants t LEFT JOIN cts c ON c.hostname = t.name ORDER BY t.name"""
    )
    return [
        {"name": r["name"], "rack": rack_name(r["rack"]), "core_ctid": r["core_ctid"], "core_ip": r["core_ip"],
         "apps": json.loads(r["apps"] or "[]"), "routes": r["routes"], "realm": r["realm"] or None,
         "moving": r["moving"]}
        for r in rows
    ]


def tenant_rack(store: Store, name: str) -> int:
    row = store.one("SELECT rack FROM tenants WHERE name = ?", (name,))
    if row is None:
        raise NotFoundError(f"no tenant {name!r} (see: ctmanager tenant list)")
    return int(row[0])


def routes(store: Store, *, tenant: str | None = None) -> list[Route]:
    if tenant is None:
        rows = store.query("SELECT tenant, service, target FROM routes ORDER BY tenant, service")
    else:
        rows = store.query("SELECT tenant, service, target FROM routes WHERE tenant = ? ORDER BY service", (tenant,))
    return [route_from_row(r) for r in rows]


STATUS_FIELDS = ("ctid", "hostname", "tenant", "ip", "hn", "admst", "opst", "since", "report_age", "crash_loop",
                 "manager", "backup")


def status(store: Store, now: float | None = None, stale_after: float = 3.0, rack: int | None = None
           ) -> list[tuple[Any, ...]]:
    """One tuple per CT in STATUS_FIELDS order. OPST is what the manager daemon
    last saw, and UNKNOWN until observed or when that HN's newest report is older
    than `stale_after` (a stopped manager or a silent HN is not "UP"). Report ages
    are on the store's clock (`now`: the store's, unless given), so a CLI on
    another machine than the manager's sees the same.
    `crash_loop` is (crashes, since) for a CT the manager leaves down, else None.
    `manager`: the name of the manager that leads the CT's rack (None: none does).
    `backup`: (OK | LATE | ALARM | NEVER, age of the newest restore point) as the
    rack's leader last read it (None: never read; store/backups.py).
    `rack`: only that rack's CTs."""
    now = store.now() if now is None else now
    rows = store.query(
        """SELECT c.ct_id, c.hostname, c.tenant, c.ip, o.hn, c.admst,
                  CASE WHEN r.stored_at IS NULL OR ? - r.stored_at > ? THEN 'UNKNOWN'
                       ELSE coalesce(o.opst, 'UNKNOWN') END,
                  o.since, r.stored_at, l.count, l.since, c.rack, b.node, b.rpo, b.newest, b.newest_at, b.checked_at
           FROM cts c LEFT JOIN observed o ON o.ct_id = c.ct_id LEFT JOIN hn_reports r ON r.hn = o.hn
                LEFT JOIN crash_loops l ON l.ct_id = c.ct_id LEFT JOIN backup_points b ON b.ct_id = c.ct_id
           WHERE c.rack = ? OR ? = 1
           ORDER BY c.ct_id""", (now, stale_after, rack or 0, 1 if rack is None else 0)
    )
    leader = {r[0]: r[1] for r in store.query("SELECT rack, holder FROM leases WHERE expires > ?", (now,))}
    def backup(r: Row) -> tuple[str, float | None] | None:
        if r[12] is None:
            return None
        state, age = Known(int(r[0]), str(r[12]), float(r[13]), r[14], r[15], float(r[16])).state(now)
        return state, None if age is None else round(age, 1)

    return [(*r[:8], None if r[8] is None else round(now - r[8], 1),
             None if r[9] is None else (int(r[9]), float(r[10])), leader.get(r[11]), backup(r)) for r in rows]


def initialised(store: Store) -> bool:
    return store.get_meta("template") is not None


def template_text(store: Store) -> str:
    return store.get_meta("template") or ""


def ct_rows(store: Store) -> list[Row]:
    """Every CT as a raw row (the renderer keys its cache on the row)."""
    return store.query(f"SELECT {CT_COLUMNS} FROM cts ORDER BY ct_id")


def least_used_storage(store: Store, rack: int) -> str | None:
    """The rack's storage node holding the fewest CTs' /data (ties: by position)."""
    row = store.one("SELECT hostname FROM nodes n WHERE rack = ? AND role = 'storage' "
                    "ORDER BY (SELECT count(*) FROM cts WHERE storage = n.hostname), position LIMIT 1", (rack,))
    return None if row is None else str(row[0])


def storage_counts(store: Store) -> dict[str, int]:
    """Storage node -> how many CTs' /data it holds."""
    return {r[0]: int(r[1]) for r in store.query("SELECT storage, count(*) FROM cts GROUP BY storage")}


def hn_reports(store: Store) -> dict[str, tuple[float, str]]:
    """HN -> (when the store took it, on the store's clock; report body) of its
    newest report the manager kept."""
    return {r[0]: (float(r[1]), r[2]) for r in store.query("SELECT hn, stored_at, body FROM hn_reports")}


def compute_node(store: Store, name: str) -> Node:
    row = store.one("SELECT * FROM nodes WHERE hostname = ?", (name,))
    if row is None:
        raise NotFoundError(f"no HN {name!r} (see: ctmanager hn list)")
    node = node_from_row(row)
    if node.role != "compute":
        raise InputError(f"{name} is a {node.role} node, not an HN")
    return node


def placement(store: Store, ctid: int) -> str | None:
    row = store.one("SELECT hn FROM placements WHERE ct_id = ?", (ctid,))
    return None if row is None else str(row[0])


def rack_installed(store: Store, slot: int) -> bool:
    return store.one("SELECT 1 FROM racks WHERE slot = ?", (slot,)) is not None


def tenant_exists(store: Store, name: str) -> bool:
    return store.one("SELECT 1 FROM tenants WHERE name = ?", (name,)) is not None


def rack_ips(store: Store, rack: int) -> list[str]:
    """The addresses of the CTs configured in `rack`."""
    return [str(r[0]) for r in store.query("SELECT ip FROM cts WHERE rack = ?", (rack,))]


def route_target(store: Store, tenant: str, service: str) -> str | None:
    """Where tenant's route `service` points, if it has one."""
    row = store.one("SELECT target FROM routes WHERE tenant = ? AND service = ?", (tenant, service))
    return None if row is None else str(row[0])


def pools(store: Store, dc: DcTemplate) -> dict[str, list[str]]:
    """Pool name (<service>-<slot>) -> member CT hostnames, for pooled rack services."""
    pooled = tuple(s.name for s in dc.rack_services if s.pool)
    out: dict[str, list[str]] = {}
    if pooled:
        marks = ",".join("?" * len(pooled))
        for host, svc, rack in store.query(
                f"SELECT hostname, service, rack FROM cts WHERE service IN ({marks}) ORDER BY hostname",  # noqa: S608
                pooled):
            out.setdefault(f"{svc}-{rack}", []).append(host)
    return out
