"""The placement rules, one copy each, for every operation that needs them:
adding a CT or a tenant, removing one, and a tenant move's start and flip.

- leaving a rack: which of a CT's rows its old rack clears, and the tombstone
  that tells that rack's HNs to destroy it (`leave_rack`);
- addresses: which addresses of a rack's /16 a CT may be given (`addresses`);
- routes: where a tenant of a rack reaches one of the rack's services
  (`route_target`), what a route may point at without --foreign (`foreign`),
  and the routes a CT's removal would leave pointing at nothing (`route_users`);
- names and places: a free hostname, an installed rack, the storage node a
  CT's /data goes to.

Reads and writes go through the store's row functions; what is decided is here.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..dc import ipam, template
from ..dc.model import Ct, rack_name
from ..errors import ConflictError, NotFoundError
from ..store import edits, queries
from ..store import moves as moverows
from ..store.db import Store
from .base import Context, in_realm

# The rows a rack keeps about a CT configured in it, cleared when the CT leaves
# the rack (removed, or flipped away by a tenant move): the HN it is placed on
# (`placements`), what that rack's agents last reported of it (`observed`), the
# HNs of that rack that refused it lately (`rejections`: their HNs mean nothing
# elsewhere, and a CT removed has nothing left to be refused), the crash loop its
# manager left it down for (`crash_loops`) and the restore point read from that
# rack's storage (`backup_points`). Once it left, its rows there name HNs and
# nodes it is no longer on; its new rack, if any, starts them afresh.
LEAVE_RACK = ("placements", "observed", "rejections", "crash_loops", "backup_points")


def leave_rack(store: Store, ctid: int, hostname: str, rack: int, ip: str, *, purge: bool, at: float,
               quarantine: float) -> float:
    """CT `ctid` is no longer configured in `rack`: the rack's rows about it go,
    a tombstone tells the rack's HNs to destroy it there (its /data too only if
    `purge`: a move leaves the source copy to the workflow's delete), and its
    address there is quarantined: not handed out again until the rack's HNs all
    reported it gone, or `quarantine` s (an HN cut off may run it until then).
    Gives when the quarantine ends at the latest."""
    edits.clear_ct_rows(store, ctid, LEAVE_RACK)
    edits.tombstone(store, ctid, hostname, rack, purge=purge, at=at)
    edits.quarantine(store, ip, rack, ctid, hostname, at, at + quarantine)
    return at + quarantine


def addresses(ctx: Context, rack: int, services: Sequence[bool]) -> tuple[str, ...]:
    """One free address in `rack`'s /16 for each CT to be given one there (True:
    a rack service's CT, from the services range; False: from the CT range),
    lowest first. Taken are the rack's CTs' addresses, every address an open
    tenant move may still give back to, or give to, a CT (`reserved_ips`), and
    the addresses in quarantine (`leave_rack`)."""
    net = template.rack_network(ctx.dc.network.supernet, rack)
    used = (queries.rack_ips(ctx.store, rack) + sorted(moverows.reserved_ips(ctx.store))
            + [q[0] for q in edits.quarantined(ctx.store, rack, ctx.now())])
    out: list[str] = []
    for service in services:
        pool = ctx.dc.network.services if service else ctx.dc.network.cts
        what = f"{'service ' if service else ''}CTs in {rack_name(rack)}"
        ip = ipam.allocate(net, pool, used, what=what)
        used.append(ip)
        out.append(ip)
    return tuple(out)


def route_target(store: Store, service: str, rack: int, *, pool: bool) -> str:
    """Where a tenant of `rack` reaches rack service `service`: the rack's pool
    `<service>-<slot>` (`pool`), or else the rack's CT of that service the fewest
    routes point at (ties: the first by hostname). A new tenant's routes and a
    moved tenant's routes at its new rack are both chosen so."""
    if pool:
        return f"{service}-{rack}"
    cts = edits.service_cts(store, rack, service)
    if not cts:
        raise NotFoundError(f"{rack_name(rack)} has no {service} CT to route to")
    return min(cts, key=lambda c: (c[1], c[0]))[0]


def target_rack(ctx: Context, target: str) -> int:
    """The rack a route target is in: a CT's, or a pool's (<service>-<slot>)."""
    place = edits.ct_place(ctx.store, target)
    return int(target.rsplit("-", 1)[1]) if place is None else place[2]


def realm_holds(ctx: Context, tenant: str, *, racks: Sequence[int] = (), targets: Sequence[str] = (),
                realm: str | None = None, what: str = "refused", hint: str = "") -> None:
    """The one realm rule: a tenant pinned to a realm (`realm`, else its own) has
    nothing in a rack of another realm: no CT, no /data or copy of it, and no
    route reaching a service there (`--foreign` crosses racks and tenants, never a
    realm). Every edit that puts something of a tenant in a rack asks here."""
    pinned = moverows.tenant_realm(ctx.store, tenant) if realm is None else realm
    if not pinned:
        return
    to_be = realm is not None and realm != edits.tenant_realm_or(ctx.store, tenant, "")  # a pin being made
    for slot in racks:
        in_realm(ctx.dc, tenant, pinned, slot, what, to_be=to_be, hint=hint)
    for target in targets:
        in_realm(ctx.dc, tenant, pinned, target_rack(ctx, target), f"{what} (route target {target})",
                 to_be=to_be, hint=hint)


def foreign(ctx: Context, tenant: str, rack: int, target: str) -> str:
    """Why `target` is outside `tenant`'s own CTs and its rack's services; '' if it is not."""
    place = edits.ct_place(ctx.store, target)
    if place is None:  # a pool: <service>-<slot>
        slot = int(target.rsplit("-", 1)[1])
        return "" if slot == rack else f"is a pool of {rack_name(slot)}, not {rack_name(rack)}"
    owner, service, where = place
    if where != rack:
        return f"is in {rack_name(where)}, not {rack_name(rack)}"
    if owner is not None and owner != tenant:
        return f"is tenant {owner}'s CT"
    if owner is None and service is None:
        return "is a CT of no tenant and no rack service"
    return ""


def route_users(ctx: Context, ct: Ct) -> list[str]:
    """The routes that would be left pointing at nothing without `ct`: to it, or
    to its pool when it is the pool's last member."""
    targets = [ct.hostname]
    pool = f"{ct.service}-{ct.rack}"
    if queries.pools(ctx.store, ctx.dc).get(pool, []) == [ct.hostname]:
        targets.append(pool)
    return edits.route_users(ctx.store, targets)


def hostname_free(ctx: Context, hostname: str) -> None:
    """A CT's (or a tenant's) hostname names nothing else: no CT, node, manager or pool."""
    ctid = edits.ct_of_hostname(ctx.store, hostname)
    if ctid is not None:
        raise ConflictError(f"hostname {hostname!r} is already used by CT {ctid}")
    if edits.node_exists(ctx.store, hostname):
        raise ConflictError(f"hostname {hostname!r} is already used by a node")
    rack = edits.manager_rack(ctx.store, hostname)
    if rack is not None:  # a manager is a machine too: one hostname, one machine
        raise ConflictError(f"hostname {hostname!r} is already used by a manager of {rack_name(rack)}")
    if hostname in queries.pools(ctx.store, ctx.dc):
        raise ConflictError(f"hostname {hostname!r} is the name of a service pool")


def storage_node(store: Store, rack: int) -> str:
    """The storage node of `rack` a CT's /data goes to: the one holding the fewest
    CTs' /data (ties: by position)."""
    node = queries.least_used_storage(store, rack)
    if node is None:
        raise NotFoundError(f"{rack_name(rack)} has no storage node to hold /data")
    return node


def rack_installed(store: Store, rack: int) -> None:
    if not queries.rack_installed(store, rack):
        raise NotFoundError(f"{rack_name(rack)} is not installed (see: ctmanager rack list)")
