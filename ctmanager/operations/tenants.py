"""Operations on tenants: add (with its core CT and its routes to the rack's
services), remove, pin to a realm; and a tenant's routes: set, remove.

A new tenant's routes are chosen by the rule a moved tenant's are
(rules.route_target); a tenant pinned to a realm has nothing outside it
(rules.realm_holds).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import validate as v
from ..dc import names
from ..dc.model import Ct, DcTemplate, Resources, rack_name
from ..errors import ConflictError, InputError, NotFoundError
from ..store import edits, queries
from ..store import moves as moverows
from ..store.db import Store
from . import rules
from .base import Context, Operation, known_realm, not_moving, realm_text, run
from .cts import AddCt, RmCt


@dataclass(frozen=True)
class NewTenant:
    name: str
    routes: tuple[tuple[str, str], ...]  # (routing name, target) to each rack service


@dataclass(frozen=True)
class AddTenant(Operation[NewTenant, Ct]):
    """A new tenant in rack `rack`: its core CT (named as the tenant), and a
    route to each of the rack's services. Gives the core CT."""

    name: str
    rack: int
    apps: tuple[str, ...]
    resources: Resources
    realm: str = ""

    def check(self, ctx: Context) -> NewTenant:
        # it is the tenant's core CT's hostname too: the same rule (dc/names.py), and its
        # own name and its routes' names fit DNS
        name = names.tenant_name(ctx.dc, self.name, "tenant")
        known_realm(ctx.dc, self.realm)
        rules.realm_holds(ctx, name, racks=[self.rack], realm=self.realm, what="cannot place it")
        if queries.tenant_exists(ctx.store, name):
            raise ConflictError(f"tenant {name!r} already exists")
        rules.rack_installed(ctx.store, self.rack)
        rules.hostname_free(ctx, name)
        routes = tuple((svc.route, rules.route_target(ctx.store, svc.name, self.rack, pool=svc.pool))
                       for svc in ctx.dc.rack_services)
        return NewTenant(name, routes)

    def execute(self, ctx: Context, found: NewTenant) -> Ct:
        edits.insert_tenant(ctx.store, found.name, self.rack, self.realm, ctx.now())
        core = run(ctx, AddCt(found.name, self.rack, self.resources, tenant=found.name, apps=self.apps))
        for service, target in found.routes:
            edits.put_route(ctx.store, found.name, service, target)
        ctx.store.event("tenant.add", found.name, rack_name(self.rack))
        return core


@dataclass(frozen=True)
class RmTenant(Operation[tuple[Ct, ...], list[Ct]]):
    """Remove a tenant and its CTs (their /data purged if `purge`). Everything
    that names it goes with it: a future tenant of the same name inherits
    nothing (its routes, its edge paths). Gives the CTs removed."""

    name: str
    purge: bool = False

    def check(self, ctx: Context) -> tuple[Ct, ...]:
        queries.tenant_rack(ctx.store, self.name)  # raises NotFoundError
        not_moving(ctx.store, self.name)
        return tuple(queries.cts(ctx.store, tenant=self.name))

    def execute(self, ctx: Context, found: tuple[Ct, ...]) -> list[Ct]:
        edits.delete_tenant_routes(ctx.store, self.name)  # first: its CTs are no targets of its own routes then
        removed = [run(ctx, RmCt(str(ct.ctid), as_tenant=True, purge=self.purge)) for ct in found]
        edits.delete_tenant(ctx.store, self.name)
        ctx.store.event("tenant.rm", self.name, f"{len(removed)} CTs")
        return removed


@dataclass(frozen=True)
class RealmChange:
    tenant: str
    was: str


@dataclass(frozen=True)
class SetRealm(Operation[RealmChange, str]):
    """Pin `tenant` to `realm` ('' = unpin). Gives the realm it had."""

    tenant: str
    realm: str

    def check(self, ctx: Context) -> RealmChange:
        was = moverows.tenant_realm(ctx.store, self.tenant)
        known_realm(ctx.dc, self.realm)
        if self.realm:
            not_moving(ctx.store, self.tenant)
            slot = queries.tenant_rack(ctx.store, self.tenant)
            if ctx.dc.realm_of(slot) != self.realm:
                raise InputError(f"cannot pin tenant {self.tenant} to realm {self.realm!r}: it lives in "
                                 f"{rack_name(slot)}, in {realm_text(ctx.dc, slot)}; move it first "
                                 f"(ctmanager tenant move {self.tenant} --to RACK)")
            targets = [r.target for r in queries.routes(ctx.store, tenant=self.tenant)]
            rules.realm_holds(ctx, self.tenant, targets=targets, realm=self.realm,
                              what=f"cannot pin tenant {self.tenant} to realm {self.realm!r}",
                              hint="point the route elsewhere first (ctmanager route set)")
        return RealmChange(self.tenant, was)

    def execute(self, ctx: Context, found: RealmChange) -> str:
        edits.set_tenant_realm(ctx.store, found.tenant, self.realm)
        ctx.store.event("tenant.realm", found.tenant, f"{found.was or '-'} -> {self.realm or '-'}")
        return found.was


def set_realm(store: Store, dc: DcTemplate, tenant: str, realm: str) -> str:
    """SetRealm in the caller's transaction."""
    return run(Context(store, dc), SetRealm(tenant, realm))


@dataclass(frozen=True)
class RouteChange:
    tenant: str
    service: str
    target: str
    was: str | None


@dataclass(frozen=True)
class SetRoute(Operation[RouteChange, str | None]):
    """Point tenant's routing name `service` at a CT or pool. Gives the old target.
    A tenant's route may target its own CTs and its rack's service CTs and
    pools; another tenant's CT or another rack needs `foreign`."""

    tenant: str
    service: str
    target: str
    foreign: bool = False

    def check(self, ctx: Context) -> RouteChange:
        rack = queries.tenant_rack(ctx.store, self.tenant)
        service = names.route_service(ctx.dc, self.tenant, self.service, "service")  # its name fits DNS
        target = v.label(self.target, "target")
        not_moving(ctx.store, self.tenant)  # the move re-points its routes at the cutover
        if edits.ct_of_hostname(ctx.store, target) is None and target not in queries.pools(ctx.store, ctx.dc):
            raise NotFoundError(f"route target {target!r} is neither a CT nor a pool (see: ctmanager ct list)")
        rules.realm_holds(ctx, self.tenant, targets=[target], what=f"route {service} -> {target} refused")
        why = rules.foreign(ctx, self.tenant, rack, target)
        if why and not self.foreign:
            raise ConflictError(f"{target} {why}: {self.tenant}'s apps would reach it as {service}; "
                                "if that is meant, add --foreign")
        return RouteChange(self.tenant, service, target, queries.route_target(ctx.store, self.tenant, service))

    def execute(self, ctx: Context, found: RouteChange) -> str | None:
        edits.put_route(ctx.store, found.tenant, found.service, found.target)
        ctx.store.event("route.set", f"{found.tenant}/{found.service}", found.target)
        return found.was


@dataclass(frozen=True)
class RmRoute(Operation[str, None]):
    """Remove tenant's route `service`."""

    tenant: str
    service: str

    def check(self, ctx: Context) -> str:
        not_moving(ctx.store, self.tenant)
        target = queries.route_target(ctx.store, self.tenant, self.service)
        if target is None:
            raise NotFoundError(f"tenant {self.tenant!r} has no route {self.service!r} (see: ctmanager route list)")
        return target

    def execute(self, ctx: Context, found: str) -> None:
        edits.delete_route(ctx.store, self.tenant, self.service)
        ctx.store.event("route.rm", f"{self.tenant}/{self.service}")
