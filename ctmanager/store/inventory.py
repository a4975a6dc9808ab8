"""Write side: every change to configured state goes through here.

Each operation validates everything it needs *before* its first write and runs
inside the caller's `store.transaction()`, so a refused request changes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .. import validate as v
from ..dc import ipam, manifest, template
from ..dc.model import ADMST_VALUES, Ct, DcTemplate, NodeSpec, Resources, rack_name
from ..errors import ConflictError, InputError, NotFoundError
from . import moves, queries
from .db import Store


@dataclass(frozen=True)
class InitPlan:
    path: Path
    dc: DcTemplate
    manifests: tuple[tuple[str, int, tuple[NodeSpec, ...]], ...]  # (source, slot, nodes)


def prepare_init(template_path: Path) -> InitPlan:
    """Read and validate the template and every manifest it lists; writes nothing."""
    dc = template.load(template_path)
    manifests = tuple((e.manifest, e.slot, manifest.load(e.manifest, dc)) for e in dc.racks)
    return InitPlan(template_path, dc, manifests)


def init(store: Store, template_path: Path) -> DcTemplate:
    return apply_init(store, prepare_init(template_path))


def apply_init(store: Store, plan: InitPlan) -> DcTemplate:
    """Initialise an empty store: the DC, the racks and tenants the template lists."""
    dc, template_path = plan.dc, plan.path
    set_dc(store, dc, template_path.read_text(encoding="utf-8"), str(template_path.resolve()))
    inv = Inventory(store, dc)
    for source, slot, nodes in plan.manifests:
        inv.install_rack(slot, nodes, source)
    for t in dc.tenants:
        inv.add_tenant(t.name, t.rack, t.apps, t.resources, t.realm)
    return dc


def set_dc(store: Store, dc: DcTemplate, text: str, file: str) -> None:
    """Make an empty store the store of DC `dc` (parsed from `text`, read from `file`)."""
    if store.get_meta("template") is not None:
        raise ConflictError(f"store {store.where} is already initialised (DC {queries.dc_template(store).name})")
    store.set_meta("template", text)
    store.set_meta("template_file", file)
    store.set_meta("next_ctid", str(dc.first_ctid))
    store.event("init", dc.name, file)


@dataclass(frozen=True)
class RackInstalled:
    slot: int
    name: str
    network: str
    nodes: list[tuple[str, str, str]]  # hostname, role, ip
    service_cts: list[Ct]


class Inventory:
    """Operations on configured state. Call inside `store.transaction()`."""

    def __init__(self, store: Store, dc: DcTemplate, now: Callable[[], float] = time.time) -> None:
        self.store = store
        self.dc = dc
        self.now = now

    # ---- racks ---------------------------------------------------------
    def install_rack(self, slot: int, nodes: tuple[NodeSpec, ...], source: str) -> RackInstalled:
        dc = self.dc
        if not dc.has_slot(slot):
            ranges = ", ".join(f"{r.first}–{r.last}" for r in dc.slots)
            raise InputError(f"slot {slot} is not a slot of DC {dc.name} (slots {ranges})")
        if self.store.one("SELECT 1 FROM racks WHERE slot = ?", (slot,)):
            raise ConflictError(f"slot {slot} is occupied: {rack_name(slot)} is already installed")
        for n in nodes:
            clash = self.store.one("SELECT hostname FROM nodes WHERE serial = ? OR mac = ?", (n.serial, n.mac))
            if clash:
                raise ConflictError(f"node at position {n.position} (serial {n.serial}, mac {n.mac}) is already installed as {clash[0]}")
        net = template.rack_network(dc.network.supernet, slot)
        self.store.execute(
            "INSERT INTO racks(slot, name, network, manifest, installed_at) VALUES (?, ?, ?, ?, ?)",
            (slot, rack_name(slot), str(net), source, self.now()),
        )
        placed: list[tuple[str, str, str]] = []
        for n in nodes:
            sku = dc.skus[n.sku]
            hostname = f"{sku.hostname_prefix}-{slot}-{n.position}"
            ip = ipam.node_address(net, dc.network.nodes, n.position)
            self.store.execute(
                "INSERT INTO nodes(hostname, rack, position, sku, role, serial, mac, ip) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (hostname, slot, n.position, n.sku, sku.role, n.serial, n.mac, ip),
            )
            placed.append((hostname, sku.role, ip))
        service_cts = [
            self.add_ct(f"{svc.name}-{slot}-{i}", slot, resources=svc.resources, service=svc.name)
            for svc in dc.rack_services
            for i in range(1, svc.count + 1)
        ]
        self.store.event("rack.install", rack_name(slot), f"{len(nodes)} nodes from {source}")
        return RackInstalled(slot, rack_name(slot), str(net), placed, service_cts)

    # ---- CTs -----------------------------------------------------------
    def add_ct(
        self,
        hostname: str,
        rack: int,
        *,
        resources: Resources,
        tenant: str | None = None,
        service: str | None = None,
        env: str | None = None,
        admst: str = "UP",
        apps: Iterable[str] = (),
        ctid: int | None = None,
    ) -> Ct:
        dc, db = self.dc, self.store
        hostname = v.hostname(hostname, "hostname")
        apps = tuple(v.label(a, "apps") for a in apps)
        env = env or dc.environments[0]
        if env not in dc.environments:
            raise InputError(f"unknown environment {env!r} (the DC has: {', '.join(dc.environments)})", where="env")
        admst = _admst(admst)
        if not self.store.one("SELECT 1 FROM racks WHERE slot = ?", (rack,)):
            raise NotFoundError(f"{rack_name(rack)} is not installed (see: ctmanager rack list)")
        if tenant is not None and queries.tenant_rack(self.store, tenant) != rack:
            raise InputError(f"tenant {tenant!r} lives in {rack_name(queries.tenant_rack(self.store, tenant))}, not {rack_name(rack)}")
        moves.busy(self.store, tenant)
        self._check_hostname_free(hostname)
        if ctid is None:
            # The counter only grows; CTIDs at or above it were taken by explicit --ctid.
            counter = int(self.store.get_meta("next_ctid") or dc.first_ctid)
            used = (r[0] for r in db.execute("SELECT ct_id FROM ctids_used WHERE ct_id >= ?", (counter,)))
            ctid = ipam.next_ctid(counter, used)
            self.store.set_meta("next_ctid", str(ctid + 1))
        else:
            # An explicit CTID leaves the counter alone: a typo such as 2147483644
            # must not use up the range for everyone after it.
            ctid = v.integer(ctid, "ctid", minimum=101, maximum=v.MAX_CTID)
            self._check_ctid_unused(ctid)
        db.execute("INSERT INTO ctids_used (ct_id, hostname, at) VALUES (?, ?, ?)", (ctid, hostname, self.now()))
        net = template.rack_network(dc.network.supernet, rack)
        pool = dc.network.services if service else dc.network.cts
        used_ips = [r[0] for r in db.execute("SELECT ip FROM cts WHERE rack = ?", (rack,))] + \
            sorted(moves.reserved_ips(db))  # an open move may give these back
        ip = ipam.allocate(net, pool, used_ips, what=f"{'service' if service else ''} CTs in {rack_name(rack)}".strip())
        storage = self._storage_for(rack)
        now = self.now()
        db.execute(
            """INSERT INTO cts(ct_id, hostname, rack, tenant, service, env, ip, storage, admst,
                               memory, swap, disk, cpus, cpuunits, cpulimit, apps, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (ctid, hostname, rack, tenant, service, env, ip, storage, admst, resources.memory, resources.swap,
             resources.disk, resources.cpus, resources.cpuunits, resources.cpulimit, json.dumps(list(apps)), now, now),
        )
        self.store.event("ct.add", str(ctid), f"{hostname} {ip} {rack_name(rack)}")
        return Ct(ctid, hostname, rack, tenant, service, env, ip, storage, admst, resources, apps)  # type: ignore[arg-type]

    def set_ct(
        self,
        ref: str,
        *,
        resources: Resources | None = None,
        admst: str | None = None,
        apps: Iterable[str] | None = None,
        env: str | None = None,
    ) -> Ct:
        ct = queries.find_ct(self.store, ref)
        new_admst = _admst(admst) if admst is not None else ct.admst
        new_apps = tuple(v.label(a, "apps") for a in apps) if apps is not None else ct.apps
        new_env = env if env is not None else ct.env
        if new_env not in self.dc.environments:
            raise InputError(f"unknown environment {new_env!r} (the DC has: {', '.join(self.dc.environments)})", where="env")
        r = resources or ct.resources
        self.store.execute(
            """UPDATE cts SET admst = ?, apps = ?, env = ?, memory = ?, swap = ?, disk = ?, cpus = ?,
                              cpuunits = ?, cpulimit = ?, updated_at = ? WHERE ct_id = ?""",
            (new_admst, json.dumps(list(new_apps)), new_env, r.memory, r.swap, r.disk, r.cpus, r.cpuunits,
             r.cpulimit, self.now(), ct.ctid),
        )
        self.store.event("ct.set", str(ct.ctid), f"admst={new_admst}")
        if admst is not None and new_admst == "UP":
            self._clear_crash_loop(ct)  # `--admst up`, even when already up: "start it again"
        return queries.find_ct(self.store, str(ct.ctid))

    def reset_ct(self, ref: str) -> tuple[Ct, tuple[int, float] | None]:
        """Clear a CT's crash loop: the manager starts it again, and counts its
        crashes from zero. Returns the CT and what was cleared (crashes, since), if any."""
        ct = queries.find_ct(self.store, ref)
        return ct, self._clear_crash_loop(ct)

    def _clear_crash_loop(self, ct: Ct) -> tuple[int, float] | None:
        row = self.store.one("SELECT count, since FROM crash_loops WHERE ct_id = ?", (ct.ctid,))
        if row is None:
            return None
        self.store.execute("DELETE FROM crash_loops WHERE ct_id = ?", (ct.ctid,))
        self.store.event("ct.reset", str(ct.ctid), f"crash loop cleared ({row[0]} crashes)")
        return int(row[0]), float(row[1])

    def rm_ct(self, ref: str, *, as_tenant: bool = False, purge: bool = False) -> Ct:
        """Remove a CT from the configuration. A tombstone tells the reconcile loop
        to destroy it on the HNs (its /data kept unless `purge`)."""
        ct = queries.find_ct(self.store, ref)
        moves.busy(self.store, ct.tenant)
        moves.route_target(self.store, ct.hostname)
        if ct.tenant is not None and ct.hostname == ct.tenant and not as_tenant:
            raise ConflictError(f"CT {ct.hostname} is tenant {ct.tenant}'s core CT; remove the tenant instead: ctmanager tenant rm {ct.tenant}")
        users = self._route_users(ct)
        if users:
            raise ConflictError(f"CT {ct.hostname} is the target of route(s) {', '.join(users)}; move them first: ctmanager route set TENANT SERVICE TARGET")
        self.store.execute("DELETE FROM observed WHERE ct_id = ?", (ct.ctid,))
        self.store.execute("DELETE FROM placements WHERE ct_id = ?", (ct.ctid,))
        self.store.execute("DELETE FROM crash_loops WHERE ct_id = ?", (ct.ctid,))
        self.store.execute("DELETE FROM backup_points WHERE ct_id = ?", (ct.ctid,))
        self.store.execute("DELETE FROM cts WHERE ct_id = ?", (ct.ctid,))
        self.store.execute("INSERT INTO removed (ct_id, hostname, purge, removed_at, rack) VALUES (?, ?, ?, ?, ?) "
                           "ON CONFLICT(ct_id) DO UPDATE SET hostname = excluded.hostname, purge = excluded.purge, "
                           "removed_at = excluded.removed_at, rack = excluded.rack",
                           (ct.ctid, ct.hostname, int(purge), self.now(), ct.rack))
        self.store.event("ct.rm", str(ct.ctid), ct.hostname + (" (purge /data)" if purge else ""))
        return ct

    # ---- tenants -------------------------------------------------------
    def add_tenant(self, name: str, rack: int, apps: Iterable[str], resources: Resources, realm: str = "") -> Ct:
        name = v.hostname(name, "tenant")  # it is the tenant's core CT's hostname too
        moves.known_realm(self.dc, realm)
        moves.check_realm(self.dc, name, realm, rack, "cannot place it")
        if self.store.one("SELECT 1 FROM tenants WHERE name = ?", (name,)):
            raise ConflictError(f"tenant {name!r} already exists")
        if not self.store.one("SELECT 1 FROM racks WHERE slot = ?", (rack,)):
            raise NotFoundError(f"{rack_name(rack)} is not installed (see: ctmanager rack list)")
        self._check_hostname_free(name)
        self.store.execute("INSERT INTO tenants(name, rack, created_at, realm) VALUES (?, ?, ?, ?)",
                           (name, rack, self.now(), realm))
        core = self.add_ct(name, rack, resources=resources, tenant=name, apps=apps)
        for svc in self.dc.rack_services:
            self.store.execute(
                "INSERT INTO routes(tenant, service, target) VALUES (?, ?, ?)", (name, svc.route, self._default_target(svc.name, svc.pool, rack))
            )
        self.store.event("tenant.add", name, rack_name(rack))
        return core

    def rm_tenant(self, name: str, *, purge: bool = False) -> list[Ct]:
        queries.tenant_rack(self.store, name)  # raises NotFoundError
        moves.busy(self.store, name)
        cts = queries.cts(self.store, tenant=name)
        # Everything that names the tenant goes with it: a future tenant of the
        # same name must inherit nothing (its routes, its edge paths).
        self.store.execute("DELETE FROM routes WHERE tenant = ?", (name,))
        self.store.execute("DELETE FROM path_routes WHERE tenant = ?", (name,))
        removed = [self.rm_ct(str(ct.ctid), as_tenant=True, purge=purge) for ct in cts]
        self.store.execute("DELETE FROM tenants WHERE name = ?", (name,))
        self.store.event("tenant.rm", name, f"{len(removed)} CTs")
        return removed

    # ---- routes --------------------------------------------------------
    def set_route(self, tenant: str, service: str, target: str, *, foreign: bool = False) -> str | None:
        """Point tenant's routing name `service` at a CT or pool. Returns the old target.
        A tenant's route may target its own CTs and its rack's service CTs and
        pools; another tenant's CT or another rack needs `foreign`."""
        service = v.label(service, "service")
        target = v.label(target, "target")
        rack = queries.tenant_rack(self.store, tenant)
        moves.busy(self.store, tenant)  # the move re-points its routes at the cutover
        if not self._target_exists(target):
            raise NotFoundError(f"route target {target!r} is neither a CT nor a pool (see: ctmanager ct list)")
        why = self._foreign(tenant, rack, target)
        if why and not foreign:
            raise ConflictError(f"{target} {why}: {tenant}'s apps would reach it as {service}; "
                                "if that is meant, add --foreign")
        old = self.store.one("SELECT target FROM routes WHERE tenant = ? AND service = ?", (tenant, service))
        self.store.execute(
            "INSERT INTO routes(tenant, service, target) VALUES (?, ?, ?) "
            "ON CONFLICT(tenant, service) DO UPDATE SET target = excluded.target",
            (tenant, service, target),
        )
        self.store.event("route.set", f"{tenant}/{service}", target)
        return None if old is None else old[0]

    def rm_route(self, tenant: str, service: str) -> None:
        moves.busy(self.store, tenant)
        cur = self.store.execute("DELETE FROM routes WHERE tenant = ? AND service = ?", (tenant, service))
        if cur.rowcount == 0:
            raise NotFoundError(f"tenant {tenant!r} has no route {service!r} (see: ctmanager route list)")
        self.store.event("route.rm", f"{tenant}/{service}")

    # ---- HNs and placements --------------------------------------------
    def set_drained(self, hn: str, drained: bool) -> None:
        queries.compute_node(self.store, hn)
        self.store.execute("UPDATE nodes SET drained = ? WHERE hostname = ?", (int(drained), hn))
        self.store.event("hn.drain" if drained else "hn.undrain", hn)

    def move_ct(self, ref: str, to: str) -> tuple[Ct, str | None]:
        """Place a CT on another HN of its rack (the reconcile loop stops it on the
        old one first). Returns the CT and where it was placed before."""
        ct = queries.find_ct(self.store, ref)
        moves.busy(self.store, ct.tenant)  # its rack may change under it: the move places it
        node = queries.compute_node(self.store, to)
        if node.rack != ct.rack:
            raise InputError(f"{to} is in rack-{node.rack}; CT {ct.ctid} lives in rack-{ct.rack}")
        if node.drained:
            raise InputError(f"{to} is drained; undrain it first: ctmanager hn undrain {to}")
        old = queries.placement(self.store, ct.ctid)
        self.store.execute("INSERT INTO placements (ct_id, hn, placed_at) VALUES (?, ?, ?) ON CONFLICT(ct_id) "
                           "DO UPDATE SET hn = excluded.hn, placed_at = excluded.placed_at", (ct.ctid, to, self.now()))
        self.store.execute("DELETE FROM rejections WHERE ct_id = ? AND hn = ?", (ct.ctid, to))
        self.store.event("ct.move", str(ct.ctid), f"{old or '-'} -> {to}")
        return ct, old

    # ---- helpers -------------------------------------------------------
    def pools(self) -> dict[str, list[str]]:
        """Pool name (<service>-<slot>) -> member CT hostnames, for pooled rack services."""
        pooled = [s.name for s in self.dc.rack_services if s.pool]
        out: dict[str, list[str]] = {}
        if pooled:
            marks = ",".join("?" * len(pooled))
            for host, svc, rack in self.store.query(
                f"SELECT hostname, service, rack FROM cts WHERE service IN ({marks}) ORDER BY hostname", tuple(pooled)
            ):
                out.setdefault(f"{svc}-{rack}", []).append(host)
        return out

    def _foreign(self, tenant: str, rack: int, target: str) -> str:
        """Why `target` is outside `tenant`'s own CTs and its rack's services; '' if it is not."""
        row = self.store.one("SELECT tenant, service, rack FROM cts WHERE hostname = ?", (target,))
        if row is None:  # a pool: <service>-<slot>
            slot = int(target.rsplit("-", 1)[1])
            return "" if slot == rack else f"is a pool of {rack_name(slot)}, not {rack_name(rack)}"
        owner, service, where = row
        if where != rack:
            return f"is in {rack_name(where)}, not {rack_name(rack)}"
        if owner is not None and owner != tenant:
            return f"is tenant {owner}'s CT"
        if owner is None and service is None:
            return "is a CT of no tenant and no rack service"
        return ""

    def _target_exists(self, target: str) -> bool:
        if self.store.one("SELECT 1 FROM cts WHERE hostname = ?", (target,)):
            return True
        return target in self.pools()

    def _route_users(self, ct: Ct) -> list[str]:
        targets = [ct.hostname]
        pool = f"{ct.service}-{ct.rack}"
        members = self.pools().get(pool, [])
        if members == [ct.hostname]:  # the last member of a pool
            targets.append(pool)
        marks = ",".join("?" * len(targets))
        rows = self.store.query(f"SELECT tenant, service FROM routes WHERE target IN ({marks}) ORDER BY 1, 2", tuple(targets))
        return [f"{t}/{s}" for t, s in rows]

    def _default_target(self, service: str, pool: bool, rack: int) -> str:
        if pool:
            return f"{service}-{rack}"
        # The service CT of this rack that the fewest tenants use (ties: by name).
        row = self.store.one(
            """SELECT c.hostname FROM cts c LEFT JOIN routes r ON r.target = c.hostname
               WHERE c.rack = ? AND c.service = ? GROUP BY c.hostname ORDER BY count(r.target), c.hostname LIMIT 1""",
            (rack, service),
        )
        if row is None:
            raise NotFoundError(f"{rack_name(rack)} has no {service} CT to route to")
        return str(row[0])

    def _check_ctid_unused(self, ctid: int) -> None:
        if self.store.one("SELECT 1 FROM cts WHERE ct_id = ?", (ctid,)):
            raise ConflictError(f"CTID {ctid} is already used by {_ct_name(self.store, ctid)}")
        row = self.store.one("SELECT hostname, at FROM ctids_used WHERE ct_id = ?", (ctid,))
        if row is not None:
            raise ConflictError(f"CTID {ctid} was given to {row[0]} on {_when(row[1])}; a CTID is never reused "
                                "(its /data may still be kept): leave out --ctid to get a new one")

    def _check_hostname_free(self, hostname: str) -> None:
        row = self.store.one("SELECT ct_id FROM cts WHERE hostname = ?", (hostname,))
        if row:
            raise ConflictError(f"hostname {hostname!r} is already used by CT {row[0]}")
        if self.store.one("SELECT 1 FROM nodes WHERE hostname = ?", (hostname,)):
            raise ConflictError(f"hostname {hostname!r} is already used by a node")
        if hostname in self.pools():
            raise ConflictError(f"hostname {hostname!r} is the name of a service pool")

    def _storage_for(self, rack: int) -> str:
        """The rack's storage node holding the fewest CTs' /data (ties: by position)."""
        node = queries.least_used_storage(self.store, rack)
        if node is None:
            raise NotFoundError(f"{rack_name(rack)} has no storage node")
        return node


def _admst(value: str) -> str:
    up = str(value).upper()
    if up not in ADMST_VALUES:
        raise InputError(f"must be up or down (got {value!r})", where="admst")
    return up


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


def _ct_name(store: Store, ctid: int) -> str:
    row = store.one("SELECT hostname FROM cts WHERE ct_id = ?", (ctid,))
    return row[0] if row else str(ctid)
