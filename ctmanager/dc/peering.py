"""`[borders.NAME]` and `[[peerings]]` of the DC template: a cloud network (a VPC) joined
to the DC over a dedicated link (a VLAN on a border router's port) or an IPsec tunnel,
with one eBGP session each. Every check is here and fails in one line: link addresses
that collide with the DC's space, a zone service or another peering; duplicate VLAN or
tunnel ids; bad or private-looking ASNs; a cloud CIDR the DC already routes (or a
default route); two peerings whose clouds partly overlap (two links to one VPC accept
the same CIDRs; any other pair, disjoint ones).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from .. import validate as v
from . import tomlread
from .model import Bfd, Border, Peering, RackService, SlotRange, parse_rack  # the one rack-name parser
from .network import slot_of

KINDS = ("vlan", "ipsec")
# 0 and 65535 / 4294967295 are reserved, 23456 is AS_TRANS (RFC 6793): none is a real AS
RESERVED_ASNS = (0, 23456, 65535, 4294967295)


def borders(t: tomlread.Table, supernet: ipaddress.IPv4Network, slots: tuple[SlotRange, ...],
            taken: dict[str, str]) -> tuple[Border, ...]:
    """`taken`: address -> what holds it (zone services, backup nodes); borders join it."""
    out = []
    for name, b in t.subtables():
        v.label(name, b.where())
        ip = b.check("address", v.ipv4, b.str("address"))
        addr = str(ip)
        if addr in taken:
            raise b.error("address", f"{addr} is already {taken[addr]}")
        slot = slot_of(supernet, ip)
        if slot is not None and any(slot in r for r in slots):
            raise b.error("address", f"{addr} lies inside rack slot {slot}'s network; a border router needs an "
                                     "address outside every rack (like the zone services)")
        uplink = b.check("uplink", v.ifname, b.str("uplink", "eth0"))
        b.done()
        taken[addr] = f"border {name}'s address"
        out.append(Border(name, addr, uplink))
    return tuple(out)


def peerings(tables: list[tomlread.Table], supernet: ipaddress.IPv4Network, slots: tuple[SlotRange, ...],
             bdrs: tuple[Border, ...], taken: dict[str, str],
             services: tuple[RackService, ...]) -> tuple[Peering, ...]:
    out: list[Peering] = []
    routes = {s.route: s.name for s in services}
    for t in tables:
        p = _one(t, supernet, slots, bdrs, taken, routes)
        for other in out:
            _against(t, p, other)
        out.append(p)
    return tuple(out)


def _asn(t: tomlread.Table, key: str) -> int:
    asn = int(t.check(key, lambda x, f: v.integer(x, f, minimum=1, maximum=4294967294), t.int(key)))
    if asn in RESERVED_ASNS:
        raise t.error(key, f"AS {asn} is reserved (AS_TRANS or the ends of the range), not a real AS")
    return asn


def _link(t: tomlread.Table, supernet: ipaddress.IPv4Network, taken: dict[str, str]
          ) -> tuple[ipaddress.IPv4Interface, ipaddress.IPv4Address]:
    text = t.str("local")
    try:
        local = ipaddress.IPv4Interface(text)
    except ValueError:
        raise t.error("local", f"must be our link address with its prefix, like 169.254.10.1/30 (got {text!r})") \
            from None
    if local.network.prefixlen not in (30, 31):
        raise t.error("local", f"a peering link is a /30 or a /31 (got /{local.network.prefixlen})")
    remote = t.check("remote", v.ipv4, t.str("remote"))
    net = local.network
    usable = list(net) if net.prefixlen == 31 else list(net.hosts())
    for key, addr in (("local", local.ip), ("remote", remote)):
        if addr not in usable:
            raise t.error(key, f"{addr} is not a host address of the link {net}")
    if remote == local.ip:
        raise t.error("remote", f"is our own link address {remote}")
    if net.overlaps(supernet):
        raise t.error("local", f"the link {net} lies inside the DC's supernet {supernet}")
    for held, what in taken.items():
        if ipaddress.IPv4Address(held) in net:
            raise t.error("local", f"the link {net} holds {held}, which is {what}")
    return local, remote


def _accept(t: tomlread.Table, supernet: ipaddress.IPv4Network, taken: dict[str, str]
            ) -> tuple[ipaddress.IPv4Network, ...]:
    texts = t.strs("accept")
    if not texts:
        raise t.error("accept", "needs the cloud's CIDRs (at least one)")
    nets: list[ipaddress.IPv4Network] = []
    for i, text in enumerate(texts):
        key = f"accept[{i}]"
        net = t.check(key, v.ipv4_network, text)
        if net.prefixlen == 0:
            raise t.error(key, "a default route is never accepted from a cloud")
        if net.overlaps(supernet):
            raise t.error(key, f"{net} overlaps the DC's own supernet {supernet}: the DC already routes it")
        for addr, what in taken.items():
            if ipaddress.IPv4Address(addr) in net:
                raise t.error(key, f"{net} holds {addr}, which is {what}: the DC already routes it")
        for j, other in enumerate(nets):
            if net.overlaps(other):
                raise t.error(key, f"{net} overlaps accept[{j}] ({other})")
        nets.append(net)
    return tuple(sorted(nets))


def _racks(t: tomlread.Table, slots: tuple[SlotRange, ...]) -> tuple[int, ...]:
    texts = t.strs("racks")
    if not texts:
        raise t.error("racks", "needs the racks that use the peering (e.g. [\"rack-101\"], or [\"*\"] for all)")
    if texts == ["*"]:
        return tuple(s for r in slots for s in range(r.first, r.last + 1))
    out = []
    for i, text in enumerate(texts):
        slot = parse_rack(text, t.field(f"racks[{i}]"), file=t.file)
        if not any(slot in r for r in slots):
            raise t.error(f"racks[{i}]", f"rack-{slot} is not a slot of this DC")
        if slot in out:
            raise t.error(f"racks[{i}]", f"rack-{slot} is listed twice")
        out.append(slot)
    return tuple(sorted(out))


def _bfd(t: tomlread.Table) -> Bfd | None:
    if not t.has("bfd"):
        return None
    if t.is_bool("bfd"):
        return Bfd() if t.bool("bfd") else None
    b = t.table("bfd")
    interval = b.check("interval_ms", lambda x, f: v.integer(x, f, minimum=10, maximum=10000),
                       b.int("interval_ms", 100))
    mult = b.check("multiplier", lambda x, f: v.integer(x, f, minimum=1, maximum=255), b.int("multiplier", 3))
    b.done()
    return Bfd(interval, mult)


def _services(t: tomlread.Table, accept: Iterable[ipaddress.IPv4Network], routes: dict[str, str]
              ) -> tuple[tuple[str, str], ...]:
    s = t.table("services", required=False)
    out = []
    for name in s.keys():
        v.label(name, s.where(name))
        if name in routes:
            raise s.error(name, f"routing name {name!r} is already rack service {routes[name]!r}'s")
        addr = s.check(name, v.ipv4, s.str(name))
        if not any(addr in n for n in accept):
            raise s.error(name, f"{addr} is in none of the peering's accepted CIDRs")
        out.append((name, str(addr)))
    return tuple(sorted(out))


def _one(t: tomlread.Table, supernet: ipaddress.IPv4Network, slots: tuple[SlotRange, ...],
         bdrs: tuple[Border, ...], taken: dict[str, str], routes: dict[str, str]) -> Peering:
    name = t.check("name", v.label, t.str("name"))
    kind = t.str("kind")
    if kind not in KINDS:
        raise t.error("kind", f"must be {' or '.join(KINDS)} (got {kind!r})")
    border = t.check("border", v.label, t.str("border"))
    if not any(b.name == border for b in bdrs):
        known = ", ".join(b.name for b in bdrs) or "none: add a [borders.NAME] table"
        raise t.error("border", f"no border router {border!r} (borders: {known})")
    local, remote = _link(t, supernet, taken)
    asn, peer_asn = _asn(t, "asn"), _asn(t, "peer_asn")
    if asn == peer_asn:
        raise t.error("peer_asn", f"is our own AS {asn}: a peering is external BGP")
    accept = _accept(t, supernet, taken)
    racks = _racks(t, slots)
    max_prefixes = t.check("max_prefixes", lambda x, f: v.integer(x, f, minimum=1, maximum=100000),
                           t.int("max_prefixes", 100))
    hold = t.check("hold_time", lambda x, f: v.integer(x, f, minimum=3, maximum=65535), t.int("hold_time", 90))
    bfd = _bfd(t)
    services = _services(t, accept, routes)
    interface = gateway = local_gw = secret = ""
    vid = tid = 0
    interface = t.check("interface", v.ifname, t.str("interface"))  # the port the VLAN or the tunnel rides on
    if kind == "vlan":
        vid = t.check("vlan", lambda x, f: v.integer(x, f, minimum=1, maximum=4094), t.int("vlan"))
    else:
        tid = t.check("tunnel_id", lambda x, f: v.integer(x, f, minimum=1, maximum=65535), t.int("tunnel_id"))
        gateway = str(t.check("gateway", v.ipv4, t.str("gateway")))
        local_gw = str(t.check("local_gateway", v.ipv4, t.str("local_gateway")))
        secret = t.check("secret_file", v.path, t.str("secret_file"))
        for key, addr in (("gateway", gateway), ("local_gateway", local_gw)):
            if ipaddress.IPv4Address(addr) in supernet:
                raise t.error(key, f"{addr} lies inside the DC's supernet: a tunnel endpoint is a public address")
    t.done()
    return Peering(name, "vlan" if kind == "vlan" else "ipsec", border, local, remote, asn, peer_asn, accept, racks,
                   vid, interface, max_prefixes, hold, bfd, services, gateway, local_gw, secret, tid)


def _against(t: tomlread.Table, p: Peering, other: Peering) -> None:
    """What two peerings may not share."""
    if p.name == other.name:
        raise t.error("name", f"peering {p.name!r} is defined twice")
    if p.local.network.overlaps(other.local.network):
        raise t.error("local", f"the link {p.local.network} overlaps peering {other.name!r}'s ({other.local.network})")
    if p.kind == "vlan" and other.kind == "vlan" and p.vlan == other.vlan:
        raise t.error("vlan", f"VLAN {p.vlan} is already peering {other.name!r}'s (VLAN ids are unique in the DC)")
    if p.kind == "ipsec" and other.kind == "ipsec" and p.tunnel_id == other.tunnel_id:
        raise t.error("tunnel_id", f"tunnel {p.tunnel_id} is already peering {other.name!r}'s")
    if p.accept != other.accept and any(a.overlaps(b) for a in p.accept for b in other.accept):
        raise t.error("accept", f"overlaps peering {other.name!r}'s clouds ({', '.join(map(str, other.accept))}) "
                                "without being the same: two links to one VPC accept the same CIDRs")
    for net in p.accept:
        if net.overlaps(other.local.network):
            raise t.error("accept", f"{net} holds peering {other.name!r}'s link {other.local.network}")
    clash = {n for n, _ in p.services} & {n for n, _ in other.services}
    if clash and p.accept != other.accept:
        raise t.error("services", f"{sorted(clash)[0]!r} is already a service of peering {other.name!r}, "
                                  "another cloud")
    if clash and dict(p.services) != dict(other.services):
        raise t.error("services", f"{sorted(clash)[0]!r} names another address in peering {other.name!r}")
