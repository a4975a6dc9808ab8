"""The DNS records the store implies. Pure: values in, records out.

Two zones per DC:
  infra zone  (dc.infra_zone, e.g. uc-inf.net.internal)
    <ct>.rack-<slot>.<infra>.        A  the CT's address
    <node>.rack-<slot>.<infra>.      A  the HN's (or storage node's) address
    <service>-<slot>.rack-<slot>.<infra>.  A  one per pool member (pooled rack services)
    <route>.rack-<slot>.<infra>.     CNAME  the rack service's pool or first CT (e.g. `metrics`,
                                     which service CTs' collectd resolves through their search path)
    <svc>.rack-<slot>.<infra>.       A  a cloud service of a peering the rack uses (e.g. `s3`)
  tenant zone (<dc.tenant_zone>.internal, e.g. example.net.internal)
    <tenant>.<tzone>.                CNAME  its core CT's infra name
    <route>.<tenant>.<tzone>.        CNAME  the route's target CT or pool, in the infra zone

CNAMEs, not addresses, in the tenant zone: moving a CT or a route changes one
record, and a lookup of `smtp` from inside myhost's CT (search path
myhost.example.net.internal) follows the chain to the relay's address.
All names are absolute (trailing dot) and lower case; every label was validated
when it entered the store, and is checked again here before it reaches a zone.
Names are built by dc/names.py, whose rule keeps the kinds apart (no CT may be
named like a routing name, a node, a pool…); a name two record sets still claim
(a store from before that rule) is never settled by dropping one silently: it is
refused, or reported (`collisions`) with the first claim kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .. import validate as v
from ..dc import names
from ..dc.model import Ct, DcTemplate, Node, Route
from ..errors import InputError

RdType = str  # "A" | "CNAME"


@dataclass(frozen=True, order=True)
class RRset:
    """One name's records of one type, as the zone should hold them."""

    name: str  # absolute, lower case
    rdtype: RdType
    values: tuple[str, ...]  # sorted; A: addresses, CNAME: one absolute name
    ttl: int

    def __str__(self) -> str:
        return f"{self.name} {self.ttl} {self.rdtype} {' '.join(self.values)}"


@dataclass(frozen=True)
class Zones:
    infra: str  # absolute
    tenant: str

    def of(self, name: str) -> str:
        for zone in sorted((self.infra, self.tenant), key=len, reverse=True):
            if name == zone or name.endswith("." + zone):
                return zone
        raise InputError(f"{name} is in none of the zones {self.infra}, {self.tenant}")


def zones(dc: DcTemplate) -> Zones:
    infra, tenant = dc.infra_zone, names.internal_zone(dc)
    if v.zones_overlap(infra, tenant):  # the template refuses this; a zone served twice breaks named
        raise InputError(f"the infra zone {infra} and the tenant zone {tenant} are one, or one lies inside the other")
    return Zones(infra=absolute(infra), tenant=absolute(tenant))


def absolute(name: str) -> str:
    try:
        return v.dns_name(name.lower(), "name") + "."
    except InputError as exc:  # the message says which limit: a label's 63 or the name's 253
        raise InputError(f"{name[:300]!r} is not a valid DNS name: {exc.message}") from None


def desired(dc: DcTemplate, cts: Iterable[Ct], nodes: Iterable[Node], routes: Iterable[Route],
            pools: Mapping[str, list[str]], owners: dict[str, int] | None = None,
            collisions: list[str] | None = None) -> dict[tuple[str, RdType], RRset]:
    """Every record the DC should publish, keyed by (name, type). `owners`, if
    given, is filled with the rack each name belongs to, whose manager publishes
    it: a CT's, HN's or pool's rack; a tenant's names go with its core CT's rack
    (a route without one, with its target's). A name two record sets claim is an
    InputError naming both; with `collisions`, it is reported there instead and
    the first claim kept (the rack's own names before other CTs'), so one bad
    row does not stop the whole DC's DNS."""
    zones(dc)  # refuses zones that overlap
    ttl = dc.ttl
    out: dict[tuple[str, RdType], RRset] = {}
    claimed: dict[str, str] = {}  # absolute name -> what claims it, for a collision's message
    infra_name: dict[str, str] = {}  # CT hostname or pool name -> its absolute infra name
    owner = owners if owners is not None else {}
    rack_of: dict[str, int] = {}  # CT hostname or pool name -> its rack

    def add(name: str, rdtype: RdType, values: Iterable[str], rack: int, what: str) -> None:
        if name in claimed:
            why = f"{name} is claimed by {claimed[name]} and by {what}"
            if collisions is None:
                raise InputError(why)
            collisions.append(why)
            return
        claimed[name] = what
        out[name, rdtype] = RRset(name, rdtype, tuple(sorted(set(values))), ttl)
        owner[name] = rack

    ct_by_name = {}
    for ct in cts:
        infra_name[ct.hostname] = absolute(names.in_rack(dc, ct.hostname, ct.rack))
        ct_by_name[ct.hostname] = ct
        rack_of[ct.hostname] = ct.rack
    # the rack's own names first (a collision keeps them): nodes, service CTs, pools,
    # routing names, cloud services; then every other CT
    for node in nodes:
        add(absolute(names.in_rack(dc, node.hostname, node.rack)), "A", [node.ip], node.rack, f"node {node.hostname}")
    for ct in ct_by_name.values():
        if ct.service is not None:
            add(infra_name[ct.hostname], "A", [ct.ip], ct.rack, f"CT {ct.hostname}")
    for pool, members in sorted(pools.items()):
        ips = [ct_by_name[m].ip for m in members if m in ct_by_name]
        if not ips:
            continue  # an empty pool publishes nothing: NXDOMAIN beats a stale address
        rack = ct_by_name[members[0]].rack
        name = absolute(names.in_rack(dc, pool, rack))
        infra_name[pool] = name
        rack_of[pool] = rack
        add(name, "A", ips, rack, f"pool {pool}")
    # the rack's own routing names (metrics, smtp, …) for CTs without a tenant route:
    # <route>.rack-<slot>.<infra> -> the service's pool, or its first CT
    for slot in sorted({ct.rack for ct in ct_by_name.values()}):
        for svc in dc.rack_services:
            target = infra_name.get(names.pool_name(svc.name, slot) if svc.pool
                                    else names.service_ct_name(svc.name, slot, 1))
            if target:
                add(absolute(names.in_rack(dc, svc.route, slot)), "CNAME", [target], slot,
                    f"rack service {svc.name}'s routing name")
    # a cloud peering's service names (s3, …) for the racks that use it: the cloud's address
    # (two links to one VPC name the same services; the template checked they agree)
    for slot in sorted({ct.rack for ct in ct_by_name.values()}):
        for cloud, addr in sorted({s for p in dc.peerings_of(slot) for s in p.services}):
            add(absolute(names.in_rack(dc, cloud, slot)), "A", [addr], slot, f"cloud service {cloud}")
    for ct in ct_by_name.values():
        if ct.service is None:
            add(infra_name[ct.hostname], "A", [ct.ip], ct.rack, f"CT {ct.hostname}")
    for ct in ct_by_name.values():
        if ct.tenant and ct.hostname == ct.tenant:  # the tenant's core CT
            add(absolute(names.of_tenant(dc, ct.tenant)), "CNAME", [infra_name[ct.hostname]], ct.rack,
                f"tenant {ct.tenant}")
    for r in routes:
        target = infra_name.get(r.target)
        if target is None:
            continue  # a route to a CT or pool that is gone publishes nothing
        add(absolute(names.of_route(dc, r.tenant, r.service)), "CNAME", [target],
            rack_of.get(r.tenant, rack_of[r.target]), f"route {r.tenant}/{r.service}")
    return out


@dataclass(frozen=True)
class Change:
    """What to do to one (name, type): old None = create, new None = delete."""

    name: str
    rdtype: RdType
    old: RRset | None
    new: RRset | None

    @property
    def kind(self) -> str:
        return "add" if self.old is None else ("delete" if self.new is None else "change")

    def __str__(self) -> str:
        if self.new is None:
            return f"- {self.old}"
        if self.old is None:
            return f"+ {self.new}"
        return f"~ {self.new} (was {' '.join(self.old.values)})"


def diff(want: Mapping[tuple[str, RdType], RRset], have: Mapping[tuple[str, RdType], RRset]) -> list[Change]:
    """The changes that turn `have` (what we published) into `want`, sorted by name."""
    changes = []
    for key in sorted(want.keys() | have.keys()):
        new, old = want.get(key), have.get(key)
        if new != old:
            changes.append(Change(key[0], key[1], old, new))
    return changes
