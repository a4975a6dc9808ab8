"""The names the DC gives things, built in one place, and the one rule for which
names a CT (so a tenant, whose core CT is named like it) may take.

A rack's part of the infra zone, `<name>.rack-<slot>.<infra_zone>`, holds
names of six kinds, each with a shape of its own:

    node            <sku prefix>-<slot>-<position>   A      (rack install)
    service CT      <service>-<slot>-<n>             A      (rack install)
    pool            <service>-<slot>                 A      (pooled rack services)
    routing name    <route>                          CNAME  (metrics, smtp, … : service CTs
                                                            resolve these through their search path)
    cloud service   <name>                           A      (a peering's services: s3)
    any other CT    <hostname>                       A      (tenants' core CTs are named like the tenant)

A CT's hostname may take none of the first five, in any slot, installed or not:
its A record would shadow that name (the routing CNAME of every CT in the rack)
or take one a later rack install needs. A rack service's own CTs are the one
exception (`reserved(..., service=, rack=)`). The template keeps the kinds apart
among themselves (`template_names`), so a name has one kind wherever it comes
from: `ct add`, `tenant add`, the template's tenants, a manifest's nodes.

Every name must also fit DNS: labels of at most 63 characters and names of at
most 253, checked for the longest rack label of the DC (a CT may move to any
rack). dnsroutes.records builds its records with these same functions.
"""

from __future__ import annotations

import dataclasses

from .. import validate as v
from ..errors import ConflictError, InputError
from .model import DcTemplate, rack_name


# ---- the names -------------------------------------------------------------------
def internal_zone(dc: DcTemplate) -> str:
    """The tenant zone's internal view, served beside the infra zone."""
    return f"{dc.tenant_zone}.internal"


def in_rack(dc: DcTemplate, name: str, slot: int) -> str:
    """A CT's, node's, pool's, routing or cloud service name in rack `slot` (no trailing dot)."""
    return f"{name}.{rack_name(slot)}.{dc.infra_zone}"


def of_tenant(dc: DcTemplate, tenant: str) -> str:
    return f"{tenant}.{internal_zone(dc)}"


def of_route(dc: DcTemplate, tenant: str, service: str) -> str:
    return f"{service}.{tenant}.{internal_zone(dc)}"


def node_name(prefix: str, slot: int, position: int) -> str:
    return f"{prefix}-{slot}-{position}"


def service_ct_name(service: str, slot: int, n: int) -> str:
    return f"{service}-{slot}-{n}"


def pool_name(service: str, slot: int) -> str:
    return f"{service}-{slot}"


def last_slot(dc: DcTemplate) -> int:
    """The DC's highest slot: its rack label is the longest (names are checked with it)."""
    return max(r.last for r in dc.slots)


# ---- the rule --------------------------------------------------------------------
def reserved(dc: DcTemplate, name: str, *, service: str | None = None, rack: int | None = None) -> str:
    """Why `name` may not be a CT's hostname (it is, or is shaped like, a name of
    another kind), or '' if it may. A CT of rack service `service` in `rack` may
    take that service's `<service>-<rack>-<n>`."""
    for svc in dc.rack_services:
        if name == svc.route:
            return (f"is the routing name of rack service {svc.name} ({name}.rack-<slot>.{dc.infra_zone}): "
                    "its record would shadow the rack's")
    for p in dc.peerings:
        if any(name == cloud for cloud, _ in p.services):
            return f"is the routing name of cloud service {name} (peering {p.name}): its record would shadow it"
    parts = name.split("-")
    if len(parts) > 2 and v.is_digits(parts[-1]) and v.is_digits(parts[-2]):
        family = "-".join(parts[:-2])
        for sku in dc.skus.values():
            if family == sku.hostname_prefix:
                return f"is the name of a node, or of a future one (SKU {sku.name}'s: {family}-<slot>-<position>)"
        for svc in dc.rack_services:
            if family == svc.name and not (service == svc.name and parts[-2] == str(rack)):
                return (f"is the name of a rack service's CT, or of a future one (rack service {svc.name}'s: "
                        f"{family}-<slot>-<n>)")
    if len(parts) > 1 and v.is_digits(parts[-1]):
        family = "-".join(parts[:-1])
        for svc in dc.rack_services:
            if family == svc.name:
                return (f"is the name of a service pool, or of a future one (rack service {svc.name}'s: "
                        f"{family}-<slot>)")
    return ""


def ct_hostname(dc: DcTemplate, hostname: str, field: str, *, service: str | None = None,
                rack: int | None = None) -> str:
    """A new CT's hostname: a hostname (validate.hostname), not reserved, and its
    A record's name fits DNS in every rack. Refuses with one line naming `field`."""
    name = v.hostname(hostname, field)
    why = reserved(dc, name, service=service, rack=rack)
    if why:  # a ConflictError: the name is taken by another kind (now or by a later rack install)
        raise ConflictError(f"{name!r} {why}; choose another name", where=field)
    last = last_slot(dc)
    fits(dc, name, in_rack(dc, name, last), field,
         f"in {rack_name(last)}, the DC's longest rack name: a CT may move to any rack")
    return name


def tenant_name(dc: DcTemplate, tenant: str, field: str) -> str:
    """A new tenant's name: its core CT's hostname (ct_hostname), and its own name
    and its routes' names (one per rack service) fit DNS."""
    name = ct_hostname(dc, tenant, field)
    fits(dc, name, of_tenant(dc, name), field)
    for svc in dc.rack_services:
        fits(dc, name, of_route(dc, name, svc.route), field)
    return name


def route_service(dc: DcTemplate, tenant: str, service: str, field: str) -> str:
    """A route's routing name: a DNS label, and `<service>.<tenant>.<zone>` fits DNS."""
    name = v.label(service, field)
    fits(dc, name, of_route(dc, tenant, name), field)
    return name


def fits(dc: DcTemplate, value: str, fqdn: str, field: str, note: str = "") -> None:
    """`fqdn`, a name `value` makes, is a DNS name of at most 253 characters; the
    message says how long `value` may be here."""
    if len(fqdn) <= v.MAX_NAME:
        return
    room = v.MAX_NAME - (len(fqdn) - len(value))
    raise InputError(f"{value!r} makes the DNS name {fqdn}. {len(fqdn)} characters long{f' ({note})' if note else ''}; "
                     f"a DNS name has at most {v.MAX_NAME}, so {field} has at most {max(room, 0)} characters here",
                     where=field)


# ---- the template: the kinds kept apart ---------------------------------------------
def template_names(dc: DcTemplate, *, with_tenants: bool = True) -> None:
    """Refuse a template whose names collide or do not fit DNS (one line naming the
    field): zones that overlap, a SKU prefix or rack service named so that their
    names could be read two ways, routing and cloud service names shaped like
    another kind's, and any generated name too long, for the DC's last slot.
    `with_tenants`: its `[[tenants]]` names too (as `tenant add` would)."""
    infra, tenants = dc.infra_zone, internal_zone(dc)
    for key, zone in (("tenant_zone", tenants), ("tenant_zone", dc.tenant_zone)):
        if v.zones_overlap(infra, zone):
            raise InputError(f"zone {zone} and the infra zone {infra} are one, or one lies inside the other; "
                             "a DNS server serves them as two zones", where=f"dc.{key}")
    v.dns_name(f"ns.{infra}", "dc.infra_zone")  # the name server's own name (dns bind-config)
    last = last_slot(dc)
    families: dict[str, str] = {}
    for sku in dc.skus.values():
        where = f"skus.{sku.name}.hostname_prefix"
        _family(sku.hostname_prefix, where, families)
        node = node_name(sku.hostname_prefix, last, dc.network.nodes.size)
        _fits_label(dc, sku.hostname_prefix, node, last, where)
    for svc in dc.rack_services:
        where = f"rack_services.{svc.name}"
        _family(svc.name, where, families)
        _fits_label(dc, svc.name, service_ct_name(svc.name, last, svc.count), last, where)
    for svc in dc.rack_services:
        _kind_apart(dc, svc.route, f"rack_services.{svc.name}.route", last)
    for p in dc.peerings:
        for cloud, _ in p.services:
            _kind_apart(dc, cloud, f"peerings.{p.name}.services.{cloud}", last)
    for i, t in enumerate(dc.tenants if with_tenants else ()):
        tenant_name(dc, t.name, f"tenants[{i}].name")


def _family(name: str, where: str, families: dict[str, str]) -> None:
    """A SKU prefix or rack service name: the start of `<name>-<slot>-<n>` names."""
    if v.is_digits(name.rsplit("-", 1)[-1]):
        raise InputError(f"{name!r} ends in '-<number>': its names <name>-<slot>-<n> could be read as another's",
                         where=where)
    if name in families:
        raise InputError(f"{name!r} is also {families[name]}: their names <name>-<slot>-<n> would collide",
                         where=where)
    families[name] = where


def _fits_label(dc: DcTemplate, family: str, longest: str, last: int, where: str) -> None:
    if len(longest) > 63:
        raise InputError(f"{family!r} makes names like {longest} ({len(longest)} characters); a DNS label has at "
                         f"most 63 (here it has at most {63 - (len(longest) - len(family))})", where=where)
    fits(dc, family, in_rack(dc, longest, last), where)


def _kind_apart(dc: DcTemplate, name: str, where: str, last: int) -> None:
    """A routing or cloud service name is no node's, service CT's or pool's."""
    why = reserved(_without_names(dc), name)
    if why:
        raise InputError(f"{name!r} {why}", where=where)
    fits(dc, name, in_rack(dc, name, last), where)


def _without_names(dc: DcTemplate) -> DcTemplate:
    """`dc` with its routing and cloud service names left out: the shapes only."""
    services = tuple(dataclasses.replace(s, route="") for s in dc.rack_services)
    return dataclasses.replace(dc, rack_services=services, peerings=())
