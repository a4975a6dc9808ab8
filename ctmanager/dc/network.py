"""What one rack's CTs share, derived from the DC template: the rack network
(bridge, prefix, gateway) and the DNS search path. Used by the renderer and by
the CT spec the manager sends an agent, so both compute it the same way."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .model import Ct, DcTemplate, rack_name

RACK_PREFIX = 16  # every rack gets one /16 of the DC's supernet


def rack_network(supernet: ipaddress.IPv4Network, slot: int) -> ipaddress.IPv4Network:
    """Slot N gets the N-th /16 of the supernet (10.0.0.0/8: slot 101 -> 10.101.0.0/16)."""
    base = int(supernet.network_address) + (slot << (32 - RACK_PREFIX))
    return ipaddress.IPv4Network((base, RACK_PREFIX))


def slot_of(supernet: ipaddress.IPv4Network, addr: ipaddress.IPv4Address) -> int | None:
    """The slot whose /16 holds `addr` (None: outside the supernet)."""
    if addr not in supernet:
        return None
    return (int(addr) - int(supernet.network_address)) >> (32 - RACK_PREFIX)


@dataclass(frozen=True)
class RackNet:
    bridge: str
    prefixlen: int
    gateway: str
    network: str


@dataclass(frozen=True)
class RackContext:
    """Computed once per rack."""

    name: str
    net: RackNet
    infra_search: tuple[str, ...]


def rack_context(dc: DcTemplate, slot: int) -> RackContext:
    net = rack_network(dc.network.supernet, slot)
    name = rack_name(slot)
    return RackContext(
        name=name,
        net=RackNet(bridge=dc.network.bridge, prefixlen=net.prefixlen,
                    gateway=str(net.network_address + dc.network.gateway), network=str(net)),
        infra_search=(f"{name}.{dc.infra_zone}", dc.infra_zone),
    )


def search_domains(ct: Ct, dc: DcTemplate, rack: RackContext) -> tuple[str, ...]:
    """A tenant's CTs resolve its internal zone first, then the rack's and the DC's."""
    return ((f"{ct.tenant}.{dc.tenant_zone}.internal",) if ct.tenant else ()) + rack.infra_search
