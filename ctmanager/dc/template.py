"""The DC template: one TOML file describing a whole DC before any hardware exists.

`load(path)` validates everything (unknown keys, DNS labels, ranges, overlaps,
slots against the supernet) and returns a frozen DcTemplate. See
templates/dc/example.toml for the annotated reference.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from .. import validate as v
from ..errors import InputError
from . import names, peering, tomlread
from . import resources as res
from .model import (
    DcTemplate,
    Network,
    OffsetRange,
    Paths,
    RackEntry,
    RackService,
    Resources,
    Sku,
    SlotRange,
    TenantEntry,
    parse_rack,
)
from .network import RACK_PREFIX, slot_of
from .network import rack_network as rack_network  # re-exported: part of this module's API

SKU_ROLES = ("compute", "storage")


def load(path: Path | str) -> DcTemplate:
    path = Path(path)
    return _build(tomlread.load(path), path.parent)


def loads(text: bytes, file: str, base: Path, *, stored: bool = False) -> DcTemplate:
    """A template from its text. `stored`: the text a store was initialised with;
    its `[[tenants]]` were added then and are the store's rows now, so their names
    are not held to rules made since (a store from before a name was reserved still
    opens; `tenant add` and `ct add` refuse such names from now on)."""
    return _build(tomlread.parse(text, file), base, stored=stored)


def _build(top: tomlread.Table, base: Path, *, stored: bool = False) -> DcTemplate:
    dc = top.table("dc")
    name = dc.check("name", v.label, dc.str("name"))
    infra_zone = dc.check("infra_zone", v.zone, dc.str("infra_zone"))
    tenant_zone = dc.check("tenant_zone", v.zone, dc.str("tenant_zone"))
    if infra_zone == tenant_zone:
        raise dc.error("tenant_zone", "must differ from infra_zone")
    ttl = dc.check("ttl", lambda x, f: v.integer(x, f, minimum=1, maximum=86400), dc.int("ttl", 60))
    envs = tuple(dc.check(f"environments[{i}]", v.label, e) for i, e in enumerate(dc.strs("environments", ["prod"])))
    if not envs or len(set(envs)) != len(envs):
        raise dc.error("environments", "must be a non-empty list of distinct names")
    first_ctid = dc.check(
        "first_ctid", lambda x, f: v.integer(x, f, minimum=101, maximum=v.MAX_CTID), dc.int("first_ctid", 1000)
    )
    dc.done()

    network = _network(top.table("network"))
    quarantine = _ipam(top.table("ipam", required=False))
    slots = _slots(top.tables("slots", required=True), network.supernet, top)
    skus = _skus(top.table("skus"))
    zone_services = _zone_services(top.table("zone_services"), network.supernet, slots)
    paths = _paths(top.table("paths"))
    max_compute = max((s for s in skus.values() if s.role == "compute"), key=lambda s: (s.memory, s.cpus, s.disk))
    defaults = _resources(top.table("defaults"), None, max_compute)
    services = _rack_services(top.table("rack_services", required=False), defaults, max_compute, network)
    racks = _racks(top.tables("racks"), slots, base)
    tenants = _tenants(top.tables("tenants"), defaults, max_compute, {r.slot for r in racks}, slots)
    taken = {a: f"zone service {k}'s" for k, addrs in zone_services.items() for a in addrs}
    taken.update({r.backup: "a backup node's address" for r in slots if r.backup})
    borders = peering.borders(top.table("borders", required=False), network.supernet, slots, taken)
    peerings = peering.peerings(top.tables("peerings"), network.supernet, slots, borders, taken, services)
    top.done()
    built = DcTemplate(
        name=name,
        infra_zone=infra_zone,
        tenant_zone=tenant_zone,
        ttl=ttl,
        environments=envs,
        first_ctid=first_ctid,
        network=network,
        slots=slots,
        skus=skus,
        zone_services=zone_services,
        paths=paths,
        defaults=defaults,
        rack_services=services,
        racks=racks,
        tenants=tenants,
        borders=borders,
        peerings=peerings,
        ip_quarantine=quarantine,
    )
    try:  # names across sections: zones apart, no name of two kinds, every name fits DNS
        names.template_names(built, with_tenants=not stored)
    except InputError as exc:
        raise InputError(exc.message, where=f"{top.file}: {exc.where}") from None
    return built


def _offset(t: tomlread.Table, key: str, text: str) -> int:
    """`"x.y"` = the last two octets of an address inside a rack's /16."""
    parts = text.split(".")
    if len(parts) != 2 or not all(v.is_digits(p) and int(p) < 256 for p in parts):
        raise t.error(key, f"must be an offset 'x.y' inside the rack /16 (got {text!r})")
    offset = int(parts[0]) * 256 + int(parts[1])
    if not 1 <= offset <= 65534:
        raise t.error(key, f"{text!r} is the network or broadcast address of the rack /16")
    return offset


def _range(t: tomlread.Table, key: str) -> OffsetRange:
    text = t.str(key)
    first, sep, last = text.partition("-")
    if not sep:
        raise t.error(key, f"must be a range 'x.y-x.y' (got {text!r})")
    rng = OffsetRange(_offset(t, key, first.strip()), _offset(t, key, last.strip()))
    if rng.first > rng.last:
        raise t.error(key, f"range {text!r} ends before it starts")
    return rng


# An address freed while its CT may still run on an HN cut off from its manager is
# taken until the rack's HNs reported the CT gone, or this long: an HN without quorum
# stops its CTs within fence_after and is reset by its watchdog within
# watchdog_timeout; dead_after (16 s by default) + watchdog_timeout (10 s) is the least.
MIN_QUARANTINE = 26


def _ipam(t: tomlread.Table) -> float:
    q = t.check("quarantine", lambda x, f: v.integer(x, f, minimum=MIN_QUARANTINE, maximum=30 * 86400),
                t.int("quarantine", 120))
    t.done()
    return float(q)


def _network(t: tomlread.Table) -> Network:
    supernet = t.check("supernet", v.ipv4_network, t.str("supernet"))
    if supernet.prefixlen > RACK_PREFIX:
        raise t.error("supernet", f"{supernet} is smaller than one rack (/{RACK_PREFIX})")
    bridge = t.check("bridge", v.ifname, t.str("bridge", "br0"))
    gateway = _offset(t, "gateway", t.str("gateway", "0.1"))
    ranges = {k: _range(t, k) for k in ("nodes", "services", "cts")}
    names = list(ranges)
    for i, a in enumerate(names):
        if gateway in ranges[a]:
            raise t.error(a, f"range {ranges[a]} contains the gateway")
        for b in names[i + 1 :]:
            if ranges[a].overlaps(ranges[b]):
                raise t.error(b, f"range {ranges[b]} overlaps {a} ({ranges[a]})")
    t.done()
    return Network(supernet, bridge, gateway, ranges["nodes"], ranges["services"], ranges["cts"])


def _slots(tables: list[tomlread.Table], supernet: ipaddress.IPv4Network, top: tomlread.Table) -> tuple[SlotRange, ...]:
    if not tables:
        raise top.error("slots", "needs at least one [[slots]] range")
    racks_in_supernet = 1 << (RACK_PREFIX - supernet.prefixlen)
    out: list[SlotRange] = []
    for t in tables:
        first = t.check("first", v.slot, t.int("first"))  # the one slot rule (validate.slot)
        count = t.check("count", lambda x, f: v.integer(x, f, minimum=1, maximum=v.SLOT_MAX), t.int("count"))
        realm = t.check("realm", v.label, t.str("realm")) if t.str("realm", None) is not None else ""
        backup = str(t.check("backup", v.ipv4, t.str("backup"))) if t.str("backup", None) is not None else ""
        t.done()
        rng = SlotRange(first, count, realm, backup)
        if rng.last > v.SLOT_MAX:
            raise t.error("count", f"slot {rng.last} is past the last slot a rack may have ({v.SLOT_MAX})")
        if rng.last >= racks_in_supernet:
            raise t.error(
                "count",
                f"slot {rng.last} is outside supernet {supernet}: it holds {racks_in_supernet} racks (slots 0–{racks_in_supernet - 1})",
            )
        for other in out:
            if rng.first <= other.last and other.first <= rng.last:
                raise t.error("first", f"slots {rng.first}–{rng.last} overlap slots {other.first}–{other.last}")
        out.append(rng)
    for t, rng in zip(tables, out):
        # a rack's backups go to a node outside every rack: losing a rack never loses its backups
        slot = slot_of(supernet, ipaddress.IPv4Address(rng.backup)) if rng.backup else None
        if slot is not None and any(slot in r for r in out):
            raise t.error("backup", f"{rng.backup} lies inside rack slot {slot}'s network; a backup node needs "
                                    "an address outside every rack (like the zone services)")
    return tuple(out)


def _skus(t: tomlread.Table) -> dict[str, Sku]:
    skus: dict[str, Sku] = {}
    for name, s in t.subtables():
        v_name = v.label(name, s.where())
        role = s.str("role")
        if role not in SKU_ROLES:
            raise s.error("role", f"must be one of {', '.join(SKU_ROLES)} (got {role!r})")
        prefix = s.check("hostname_prefix", v.label, s.str("hostname_prefix"))
        memory = s.check("memory", lambda x, f: v.size(x, f, minimum=1 << 30), s.scalar("memory"))
        disk = s.check("disk", lambda x, f: v.size(x, f, minimum=1 << 30), s.scalar("disk"))
        cpus = s.check("cpus", lambda x, f: v.integer(x, f, minimum=1, maximum=4096), s.int("cpus"))
        s.done()
        skus[v_name] = Sku(v_name, role, prefix, memory, disk, cpus)
    for role in SKU_ROLES:
        if not any(s.role == role for s in skus.values()):
            raise t.error(None, f"needs at least one SKU with role = {role!r}")
    return skus


def _zone_services(
    t: tomlread.Table, supernet: ipaddress.IPv4Network, slots: tuple[SlotRange, ...]
) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for key in t.keys():
        t.check(key, v.label, key.replace("_", "-"))
        addrs = t.strs(key)
        if not addrs:
            raise t.error(key, "needs at least one address")
        for i, text in enumerate(addrs):
            addr = t.check(f"{key}[{i}]", v.ipv4, text)
            slot = slot_of(supernet, addr)
            if slot is not None and any(slot in r for r in slots):
                raise t.error(f"{key}[{i}]", f"{addr} lies inside rack slot {slot}'s network; zone services need their own range")
        out[key] = tuple(addrs)
    if "resolvers" not in out:
        raise t.error("resolvers", "is required (the DNS resolvers every CT uses)")
    t.done()
    return out


def _paths(t: tomlread.Table) -> Paths:
    keys = ("prototype", "software", "data", "config", "ve_root", "ve_private", "export_root")
    values = {k: t.check(k, v.path, t.str(k)) for k in keys}
    t.done()
    return Paths(**values)


def _resources(t: tomlread.Table, base: Resources | None, limit: Sku) -> Resources:
    values = {k: t.any(k) for k in t.keys()}
    try:
        return res.parse(values, base, limit, t.path)
    except InputError as exc:
        raise InputError(exc.message, where=f"{t.file}: {exc.where}") from None


def _rack_services(t: tomlread.Table, defaults: Resources, limit: Sku, network: Network) -> tuple[RackService, ...]:
    out = []
    routes: dict[str, str] = {}
    total = 0
    for name, s in t.subtables():
        v.label(name, s.where())
        count = s.check("count", lambda x, f: v.integer(x, f, minimum=1, maximum=64), s.int("count", 1))
        route = s.check("route", v.label, s.str("route", name))
        if route in routes:
            raise s.error("route", f"routing name {route!r} is already used by rack service {routes[route]!r}")
        routes[route] = name
        pool = s.bool("pool", False)
        rt = s.take(res.KEYS)
        s.done()
        total += count
        out.append(RackService(name, count, route, pool, _resources(rt, defaults, limit)))
    if total > network.services.size:
        raise t.error(None, f"{total} service CTs per rack do not fit the services range ({network.services.size} addresses)")
    return tuple(out)


def _racks(tables: list[tomlread.Table], slots: tuple[SlotRange, ...], base: Path) -> tuple[RackEntry, ...]:
    out: list[RackEntry] = []
    for t in tables:
        slot = t.int("slot")
        if not any(slot in r for r in slots):
            raise t.error("slot", f"slot {slot} is not a slot of this DC ({_slot_text(slots)})")
        if any(r.slot == slot for r in out):
            raise t.error("slot", f"slot {slot} is installed twice")
        manifest = t.check("manifest", v.relpath, t.str("manifest"))
        t.done()
        out.append(RackEntry(slot, str(base / manifest)))
    return tuple(out)


def _realm_text(realm: str) -> str:
    return f"realm {realm!r}" if realm else "no realm"


def _slot_text(slots: tuple[SlotRange, ...]) -> str:
    return ", ".join(f"{r.first}–{r.last}" for r in slots)


def _tenants(tables: list[tomlread.Table], defaults: Resources, limit: Sku, racks: set[int],
             slots: tuple[SlotRange, ...]) -> tuple[TenantEntry, ...]:
    out: list[TenantEntry] = []
    for t in tables:
        name = t.check("name", v.label, t.str("name"))
        if any(e.name == name for e in out):
            raise t.error("name", f"tenant {name!r} is listed twice")
        rack_text = t.str("rack")
        slot = parse_rack(rack_text, t.field("rack"), file=t.file)
        if slot not in racks:
            raise t.error("rack", f"{rack_text!r} is not installed by this template")
        apps = tuple(t.check(f"apps[{i}]", v.label, a) for i, a in enumerate(t.strs("apps", [])))
        realm = t.check("realm", v.label, t.str("realm")) if t.str("realm", None) is not None else ""
        rack_realm = next((r.realm for r in slots if slot in r), "")
        if realm and realm != rack_realm:
            raise t.error("realm", f"tenant {name!r} is pinned to realm {realm!r}, but rack-{slot} is in "
                          f"{_realm_text(rack_realm)}")
        rt = t.take(res.KEYS)
        t.done()
        out.append(TenantEntry(name, slot, apps, _resources(rt, defaults, limit), realm))
    return tuple(out)
