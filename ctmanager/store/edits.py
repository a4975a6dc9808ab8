"""Rows of configuration edits: the reads an edit's check needs and the writes
its execution makes, for racks, nodes, CTs, CTIDs, tenants, routes, placements
and tombstones.

Only rows: which rows an edit touches, which address or route target it picks,
and when it is refused, are decided by the operations (ctmanager/operations/),
which call these inside the caller's `store.transaction()`. Tenant moves' own
rows are in moves.py; the status view and reads by intent in queries.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from ..dc.model import Ct, Resources
from .db import Store

# The tables holding one CT's state keyed by its CTID alone, that an edit may
# clear for it (the list it clears is the operation's; this one guards the SQL).
CT_STATE_TABLES = frozenset({"observed", "placements", "rejections", "crash_loops", "backup_points"})


# ---- reads for checks ------------------------------------------------------------
def node_clash(store: Store, serial: str, mac: str) -> str | None:
    """The installed node with this serial or MAC, if any."""
    row = store.one("SELECT hostname FROM nodes WHERE serial = ? OR mac = ?", (serial, mac))
    return None if row is None else str(row[0])


def ct_of_hostname(store: Store, hostname: str) -> int | None:
    row = store.one("SELECT ct_id FROM cts WHERE hostname = ?", (hostname,))
    return None if row is None else int(row[0])


def ct_place(store: Store, hostname: str) -> tuple[str | None, str | None, int] | None:
    """(tenant, rack service, rack) of the CT named `hostname`, if there is one."""
    row = store.one("SELECT tenant, service, rack FROM cts WHERE hostname = ?", (hostname,))
    return None if row is None else (row[0], row[1], int(row[2]))


def node_exists(store: Store, hostname: str) -> bool:
    return store.one("SELECT 1 FROM nodes WHERE hostname = ?", (hostname,)) is not None


def tenant_realm_or(store: Store, tenant: str, default: str) -> str:
    """A tenant's realm ('' if it has none), or `default` if there is no such tenant (yet)."""
    row = store.one("SELECT realm FROM tenants WHERE name = ?", (tenant,))
    return str(row[0] or "") if row is not None else default


def manager_rack(store: Store, name: str) -> int | None:
    """The rack of a manager that checked in under `name` (a host's name, by default)."""
    row = store.one("SELECT rack FROM managers WHERE name = ? ORDER BY rack LIMIT 1", (name,))
    return int(row[0]) if row is not None else None


def ctids_from(store: Store, counter: int) -> list[int]:
    """CTIDs given out at or above `counter` (explicit --ctid, past the counter)."""
    return [int(r[0]) for r in store.query("SELECT ct_id FROM ctids_used WHERE ct_id >= ?", (counter,))]


def ctid_holder(store: Store, ctid: int) -> str | None:
    """The hostname of the CT configured with this CTID now, if any."""
    row = store.one("SELECT hostname FROM cts WHERE ct_id = ?", (ctid,))
    return None if row is None else str(row[0])


def ctid_given(store: Store, ctid: int) -> tuple[str, float] | None:
    """(hostname, when) this CTID was given out, ever, if it was."""
    row = store.one("SELECT hostname, at FROM ctids_used WHERE ct_id = ?", (ctid,))
    return None if row is None else (str(row[0]), float(row[1]))


def service_cts(store: Store, rack: int, service: str) -> list[tuple[str, int]]:
    """(hostname, how many routes point at it) of each of `rack`'s `service` CTs."""
    rows = store.query("SELECT c.hostname, count(r.target) FROM cts c LEFT JOIN routes r ON r.target = c.hostname "
                       "WHERE c.rack = ? AND c.service = ? GROUP BY c.hostname", (rack, service))
    return [(str(r[0]), int(r[1])) for r in rows]


def route_users(store: Store, targets: Iterable[str]) -> list[str]:
    """'tenant/service' of every route pointing at one of `targets`."""
    names = tuple(targets)
    if not names:
        return []
    marks = ",".join("?" * len(names))
    rows = store.query(f"SELECT tenant, service FROM routes WHERE target IN ({marks}) ORDER BY 1, 2",  # noqa: S608
                       names)
    return [f"{t}/{s}" for t, s in rows]


def crash_loop(store: Store, ctid: int) -> tuple[int, float] | None:
    """(crashes, since) of a CT the manager leaves down, if it does."""
    row = store.one("SELECT count, since FROM crash_loops WHERE ct_id = ?", (ctid,))
    return None if row is None else (int(row[0]), float(row[1]))


# ---- the DC ----------------------------------------------------------------------
def set_template(store: Store, text: str, file: str, first_ctid: int) -> None:
    """The store is the store of the DC whose template is `text` (read from `file`);
    CTIDs are counted from `first_ctid`."""
    store.set_meta("template", text)
    store.set_meta("template_file", file)
    store.set_meta("next_ctid", str(first_ctid))


def ctid_counter(store: Store) -> int | None:
    """The next CTID to give out (None: not counted yet)."""
    value = store.get_meta("next_ctid")
    return int(value) if value else None


def set_ctid_counter(store: Store, value: int) -> None:
    store.set_meta("next_ctid", str(value))


# ---- racks and nodes -------------------------------------------------------------
def insert_rack(store: Store, slot: int, name: str, network: str, source: str, at: float) -> None:
    store.execute("INSERT INTO racks(slot, name, network, manifest, installed_at) VALUES (?, ?, ?, ?, ?)",
                  (slot, name, network, source, at))


def insert_node(store: Store, hostname: str, rack: int, position: int, sku: str, role: str, serial: str,
                mac: str, ip: str) -> None:
    store.execute("INSERT INTO nodes(hostname, rack, position, sku, role, serial, mac, ip) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (hostname, rack, position, sku, role, serial, mac, ip))


def set_drained(store: Store, hn: str, drained: bool) -> None:
    store.execute("UPDATE nodes SET drained = ? WHERE hostname = ?", (int(drained), hn))


# ---- CTs -------------------------------------------------------------------------
def record_ctid(store: Store, ctid: int, hostname: str, at: float) -> None:
    """CTID `ctid` is given out (to `hostname`), for ever."""
    store.execute("INSERT INTO ctids_used (ct_id, hostname, at) VALUES (?, ?, ?)", (ctid, hostname, at))


def insert_ct(store: Store, ct: Ct, at: float) -> None:
    r = ct.resources
    store.execute(
        """INSERT INTO cts(ct_id, hostname, rack, tenant, service, env, ip, storage, admst,
                           memory, swap, disk, cpus, cpuunits, cpulimit, apps, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (ct.ctid, ct.hostname, ct.rack, ct.tenant, ct.service, ct.env, ct.ip, ct.storage, ct.admst, r.memory,
         r.swap, r.disk, r.cpus, r.cpuunits, r.cpulimit, json.dumps(list(ct.apps)), at, at))


def update_ct(store: Store, ctid: int, *, admst: str, apps: Iterable[str], env: str, resources: Resources,
              at: float) -> None:
    r = resources
    store.execute("""UPDATE cts SET admst = ?, apps = ?, env = ?, memory = ?, swap = ?, disk = ?, cpus = ?,
                                    cpuunits = ?, cpulimit = ?, updated_at = ? WHERE ct_id = ?""",
                  (admst, json.dumps(list(apps)), env, r.memory, r.swap, r.disk, r.cpus, r.cpuunits, r.cpulimit,
                   at, ctid))


def rehome_ct(store: Store, ctid: int, rack: int, ip: str, storage: str, at: float) -> None:
    """The CT is configured in `rack` now, at `ip`, its /data on `storage`."""
    store.execute("UPDATE cts SET rack = ?, ip = ?, storage = ?, updated_at = ? WHERE ct_id = ?",
                  (rack, ip, storage, at, ctid))


def delete_ct(store: Store, ctid: int) -> None:
    store.execute("DELETE FROM cts WHERE ct_id = ?", (ctid,))


def clear_ct_rows(store: Store, ctid: int, tables: Iterable[str]) -> None:
    """Delete CT `ctid`'s rows from each of `tables` (some of CT_STATE_TABLES)."""
    for table in tables:
        if table not in CT_STATE_TABLES:
            raise ValueError(f"not a table of a CT's state: {table!r}")
        store.execute(f"DELETE FROM {table} WHERE ct_id = ?", (ctid,))  # noqa: S608 - checked above


def tombstone(store: Store, ctid: int, hostname: str, rack: int, *, purge: bool, at: float) -> None:
    """Rack `rack`'s HNs are to destroy CT `ctid` (its /data too if `purge`): the
    newest tombstone of a CTID is the one kept."""
    store.execute("INSERT INTO removed (ct_id, hostname, purge, removed_at, rack) VALUES (?, ?, ?, ?, ?) "
                  "ON CONFLICT(ct_id) DO UPDATE SET hostname = excluded.hostname, purge = excluded.purge, "
                  "removed_at = excluded.removed_at, rack = excluded.rack",
                  (ctid, hostname, int(purge), at, rack))


def quarantine(store: Store, ip: str, rack: int, ctid: int, hostname: str, at: float, until: float) -> None:
    """Address `ip` of rack `rack` was CT `ctid`'s: not free again before `until`, nor while the CT's tombstone there is."""
    store.execute("INSERT INTO ip_quarantine (ip, rack, ct_id, hostname, freed_at, until) VALUES (?, ?, ?, ?, ?, ?) "
                  "ON CONFLICT(ip) DO UPDATE SET rack = excluded.rack, ct_id = excluded.ct_id, "
                  "hostname = excluded.hostname, freed_at = excluded.freed_at, until = excluded.until",
                  (ip, rack, ctid, hostname, at, until))


def quarantined(store: Store, rack: int, now: float) -> list[tuple[str, int, str, float]]:
    """Rack `rack`'s addresses in quarantine now: (ip, CTID, hostname, until). One
    is free again once its time is up, or once the rack's HNs all reported its CT
    gone (the manager dropped its tombstone). A row is kept after (replaced when
    the address is freed again): at most one per address."""
    return [(str(r[0]), int(r[1]), str(r[2]), float(r[3])) for r in store.query(
        "SELECT ip, ct_id, hostname, until FROM ip_quarantine q WHERE rack = ? AND until > ? AND EXISTS "
        "(SELECT 1 FROM removed r WHERE r.ct_id = q.ct_id AND r.rack IN (?, 0)) ORDER BY ip", (rack, now, rack))]


def place(store: Store, ctid: int, hn: str, at: float) -> None:
    store.execute("INSERT INTO placements (ct_id, hn, placed_at) VALUES (?, ?, ?) ON CONFLICT(ct_id) "
                  "DO UPDATE SET hn = excluded.hn, placed_at = excluded.placed_at", (ctid, hn, at))


def forget_rejection(store: Store, ctid: int, hn: str) -> None:
    store.execute("DELETE FROM rejections WHERE ct_id = ? AND hn = ?", (ctid, hn))


# ---- tenants and routes ------------------------------------------------------------
def insert_tenant(store: Store, name: str, rack: int, realm: str, at: float) -> None:
    store.execute("INSERT INTO tenants(name, rack, created_at, realm) VALUES (?, ?, ?, ?)", (name, rack, at, realm))


def delete_tenant_routes(store: Store, name: str) -> None:
    """Everything that routes by the tenant's name: its routes and its edge paths."""
    store.execute("DELETE FROM routes WHERE tenant = ?", (name,))
    store.execute("DELETE FROM path_routes WHERE tenant = ?", (name,))


def delete_tenant(store: Store, name: str) -> None:
    store.execute("DELETE FROM tenants WHERE name = ?", (name,))


def set_tenant_rack(store: Store, name: str, rack: int) -> None:
    store.execute("UPDATE tenants SET rack = ? WHERE name = ?", (rack, name))


def set_tenant_realm(store: Store, name: str, realm: str) -> None:
    store.execute("UPDATE tenants SET realm = ? WHERE name = ?", (realm, name))


def put_route(store: Store, tenant: str, service: str, target: str) -> None:
    store.execute("INSERT INTO routes(tenant, service, target) VALUES (?, ?, ?) "
                  "ON CONFLICT(tenant, service) DO UPDATE SET target = excluded.target", (tenant, service, target))


def retarget_route(store: Store, tenant: str, service: str, target: str) -> None:
    """Point an existing route elsewhere (a route removed meanwhile stays removed)."""
    store.execute("UPDATE routes SET target = ? WHERE tenant = ? AND service = ?", (target, tenant, service))


def delete_route(store: Store, tenant: str, service: str) -> None:
    store.execute("DELETE FROM routes WHERE tenant = ? AND service = ?", (tenant, service))
