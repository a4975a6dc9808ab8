"""Typed, immutable values. Everything past the boundary (template, manifest,
CLI) is one of these; validation happened when they were built.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from .. import validate as v
from ..errors import InputError

Admst = Literal["UP", "DOWN"]
ADMST_VALUES: tuple[str, ...] = ("UP", "DOWN")


@dataclass(frozen=True)
class Resources:
    memory: int  # bytes
    swap: int  # bytes
    disk: int  # bytes
    cpus: int
    cpuunits: int
    cpulimit: int  # percent of one CPU, OpenVZ style (200 = two CPUs)


@dataclass(frozen=True)
class Sku:
    name: str
    role: Literal["compute", "storage"]
    hostname_prefix: str
    memory: int
    disk: int
    cpus: int


@dataclass(frozen=True)
class OffsetRange:
    """A range of host offsets inside a rack's /16 (first and last inclusive)."""

    first: int
    last: int

    def __contains__(self, offset: object) -> bool:
        return isinstance(offset, int) and self.first <= offset <= self.last

    def overlaps(self, other: OffsetRange) -> bool:
        return self.first <= other.last and other.first <= self.last

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        return f"{_off(self.first)}-{_off(self.last)}"


def _off(offset: int) -> str:
    return f"{offset >> 8}.{offset & 0xFF}"


@dataclass(frozen=True)
class Network:
    supernet: ipaddress.IPv4Network
    bridge: str
    gateway: int  # offset inside the rack /16
    nodes: OffsetRange
    services: OffsetRange
    cts: OffsetRange


@dataclass(frozen=True)
class SlotRange:
    first: int
    count: int
    realm: str = ""  # where its racks stand (a DNS label; "" = no realm named)
    backup: str = ""  # the address of its racks' backup node (ctbackup's repositories; "" = none)

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    def __contains__(self, slot: object) -> bool:
        return isinstance(slot, int) and self.first <= slot <= self.last


@dataclass(frozen=True)
class Paths:
    prototype: str  # HN path of the RO prototype root
    software: str  # HN path of the RO software trees; /<env> appended
    data: str  # HN path of per-CT /data; /<ctid> appended
    config: str  # HN path of per-CT rendered files (resolv.conf); /<ctid> appended
    ve_root: str  # OpenVZ VE_ROOT base; /$VEID appended
    ve_private: str  # OpenVZ VE_PRIVATE base; /$VEID appended
    export_root: str  # storage node: /proto, /sw/<env>, /data under it


@dataclass(frozen=True)
class RackService:
    name: str  # e.g. relay -> CTs relay-<slot>-<n>
    count: int
    route: str  # routing name tenants use, e.g. smtp
    pool: bool  # route to the whole pool <name>-<slot> rather than one CT
    resources: Resources


@dataclass(frozen=True)
class RackEntry:
    """A rack the template installs at init."""

    slot: int
    manifest: str  # absolute path, resolved against the template's folder


@dataclass(frozen=True)
class TenantEntry:
    name: str
    rack: int  # slot
    apps: tuple[str, ...]
    resources: Resources
    realm: str = ""  # pinned to this realm ("" = anywhere)


@dataclass(frozen=True)
class Border:
    """A border router: where peerings end. `address` is its DC-side address (outside
    every rack, like the zone services); the DC's core routes the clouds' CIDRs to it."""

    name: str
    address: str
    uplink: str = "eth0"  # its DC-side interface


@dataclass(frozen=True)
class Bfd:
    interval_ms: int = 100  # BFD's min rx/tx interval
    multiplier: int = 3     # missed packets before the session is down


@dataclass(frozen=True)
class Peering:
    """A cloud network (a VPC) as one more segment of the DC: a dedicated link presented
    as a VLAN (`vlan`) or an IPsec tunnel (`ipsec`), with one eBGP session over it."""

    name: str
    kind: Literal["vlan", "ipsec"]
    border: str
    local: ipaddress.IPv4Interface     # our link address and the link's prefix (/30 or /31)
    remote: ipaddress.IPv4Address      # the provider's link address
    asn: int
    peer_asn: int
    accept: tuple[ipaddress.IPv4Network, ...]  # the cloud CIDRs we import (and nothing else)
    racks: tuple[int, ...]             # the slots that use it: exported to the cloud, routed to it
    vlan: int = 0                      # 802.1Q id (vlan)
    interface: str = ""                # the border's port the VLAN (or the tunnel's endpoint) is on
    max_prefixes: int = 100
    hold_time: int = 90                # s: BGP's, when there is no BFD
    bfd: Bfd | None = None
    services: tuple[tuple[str, str], ...] = ()  # (routing name, address in the cloud)
    gateway: str = ""                  # ipsec: the provider's tunnel endpoint
    local_gateway: str = ""            # ipsec: ours
    secret_file: str = ""              # ipsec: a swanctl secrets file holding the PSK (never rendered)

    tunnel_id: int = 0                 # ipsec: the XFRM interface id (unique, like a VLAN id)

    @property
    def link(self) -> str:
        """The border's interface for this peering: vl<id> for a VLAN, xf<id> for a tunnel."""
        return f"vl{self.vlan}" if self.kind == "vlan" else f"xf{self.tunnel_id}"


@dataclass(frozen=True)
class DcTemplate:
    name: str
    infra_zone: str
    tenant_zone: str
    ttl: int
    environments: tuple[str, ...]
    first_ctid: int
    network: Network
    slots: tuple[SlotRange, ...]
    skus: dict[str, Sku] = field(hash=False)
    zone_services: dict[str, tuple[str, ...]] = field(hash=False)
    paths: Paths = field(hash=False)
    defaults: Resources = field(hash=False)
    rack_services: tuple[RackService, ...] = ()
    racks: tuple[RackEntry, ...] = ()
    tenants: tuple[TenantEntry, ...] = ()
    borders: tuple[Border, ...] = ()
    peerings: tuple[Peering, ...] = ()
    ip_quarantine: float = 120.0  # s an address freed by a CT leaving its rack stays taken ([ipam] quarantine)

    def peerings_of(self, slot: int) -> tuple[Peering, ...]:
        return tuple(p for p in self.peerings if slot in p.racks)

    @property
    def resolvers(self) -> tuple[str, ...]:
        return self.zone_services["resolvers"]

    def has_slot(self, slot: int) -> bool:
        return any(slot in r for r in self.slots)

    def realm_of(self, slot: int) -> str:
        """The realm of the slot range `slot` is in ("" for none, or no such slot)."""
        return next((r.realm for r in self.slots if slot in r), "")

    def backup_of(self, slot: int) -> str:
        """The backup node of the slot range `slot` is in ("" for none)."""
        return next((r.backup for r in self.slots if slot in r), "")

    @property
    def realms(self) -> tuple[str, ...]:
        return tuple(sorted({r.realm for r in self.slots if r.realm}))

    @property
    def max_compute(self) -> Sku:
        """The largest compute SKU: no CT may ask for more than it has."""
        compute = [s for s in self.skus.values() if s.role == "compute"]
        return max(compute, key=lambda s: (s.memory, s.cpus, s.disk))


def rack_name(slot: int) -> str:
    return f"rack-{slot}"


def parse_rack(text: object, field: str, *, file: str | None = None) -> int:
    """`rack-101` or `101` -> 101."""
    s = str(text)
    digits = s[5:] if s.startswith("rack-") else s
    if not v.is_digits(digits) or len(digits) > 5:
        where = f"{file}: {field}" if file else field
        raise InputError(f"is not a rack like rack-101 (got {s!r})", where=where)
    return int(digits)


@dataclass(frozen=True)
class NodeSpec:
    """One server of a delivery manifest."""

    position: int
    sku: str
    serial: str
    mac: str


@dataclass(frozen=True)
class Node:
    hostname: str
    rack: int
    position: int
    sku: str
    role: str
    serial: str
    mac: str
    ip: str
    drained: bool = False


@dataclass(frozen=True)
class Ct:
    ctid: int
    hostname: str
    rack: int
    tenant: str | None
    service: str | None
    env: str
    ip: str
    storage: str  # hostname of the storage node holding its /data
    admst: Admst
    resources: Resources
    apps: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    tenant: str
    service: str
    target: str  # CT hostname or pool name (<service>-<slot>)
