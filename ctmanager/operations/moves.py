"""Operations of tenant moves: start one, and flip its CTs from one rack to the
other (forward at the cutover, back on a rollback after it).

The move's record and the workflow's own writes (phase, step, log, abort) are
rows (store/moves.py); the machine that steps it is reconcile/movesteps.py. What
a move decides about placement is here, by the rules every other edit uses: a
moved tenant's routes point where a new tenant's in that rack would
(rules.route_target), its CTs get addresses as a new CT there would
(rules.addresses), and the rack left clears its rows and keeps a tombstone as
for a removed CT (rules.leave_rack).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..dc.model import DcTemplate, rack_name
from ..errors import ConflictError, InputError
from ..reconcile.moving import Move, MoveCt
from ..store import edits, queries
from ..store import moves as moverows
from ..store.db import Store
from . import rules
from .base import Context, Operation, not_moving, run


@dataclass(frozen=True)
class StartMove(Operation[Move, Move]):
    """Record a move of `tenant` to rack `dst`; the destination's manager runs it.
    Its check is what the move would do (a dry run): it refuses a move that cannot
    be, in one line. Routes to the source rack's services go to the destination's
    service of the same name; routes to anything else stay."""

    tenant: str
    dst: int
    precopy: bool = True
    keep_source: bool = False
    bwlimit: int = 0

    def check(self, ctx: Context) -> Move:
        store, tenant, dst = ctx.store, self.tenant, self.dst
        src = queries.tenant_rack(store, tenant)
        realm = moverows.tenant_realm(store, tenant)
        not_moving(store, tenant)
        rules.rack_installed(store, dst)
        if dst == src:
            raise InputError(f"tenant {tenant} lives in {rack_name(src)} already")
        rules.realm_holds(ctx, tenant, racks=[dst], realm=realm, what="refused")
        cts = queries.cts(store, tenant=tenant)
        if not cts:
            raise ConflictError(f"tenant {tenant} has no CTs to move")
        storage = rules.storage_node(store, dst)
        if not [n for n in queries.nodes(store, rack=dst) if n.role == "compute"]:
            raise ConflictError(f"{rack_name(dst)} has no HNs to run tenant {tenant}'s CTs")
        routes = {r.service: (r.target, route_at(ctx, r.target, src, dst))
                  for r in queries.routes(store, tenant=tenant)}
        plan = tuple(MoveCt(c.ctid, c.hostname, c.ip, "", c.storage, storage) for c in cts)
        return Move(0, tenant, src, dst, "copy", "", False, False, self.precopy, self.keep_source, False,
                    self.bwlimit, routes, 0, 0, 0, 0.0, 0.0, None, None, None, None, None, None, "", (), plan)

    def execute(self, ctx: Context, found: Move) -> Move:
        return moverows.insert(ctx.store, found, ctx.now())


def prepare(store: Store, dc: DcTemplate, tenant: str, dst: int) -> Move:
    """What a move of `tenant` to rack `dst` would do (StartMove's check: not written)."""
    return StartMove(tenant, dst).check(Context(store, dc))


def begin(store: Store, dc: DcTemplate, tenant: str, dst: int, now: float, *, precopy: bool = True,
          keep_source: bool = False, bwlimit: int = 0) -> Move:
    """StartMove in the caller's transaction, stamped `now`."""
    return run(Context(store, dc, lambda: now), StartMove(tenant, dst, precopy, keep_source, bwlimit))


def route_at(ctx: Context, target: str, src: int, dst: int) -> str:
    """Where a route to `target` points once the tenant lives in `dst`: a rack
    service's CT or pool of the source goes to the destination's, chosen as a new
    tenant's there is; the tenant's own CTs (they move with it) and anything outside
    the source rack stay."""
    place = edits.ct_place(ctx.store, target)
    if place is not None:
        _owner, service, rack = place
        if rack != src or service is None:
            return target
        return rules.route_target(ctx.store, service, dst, pool=False)
    for svc in ctx.dc.rack_services:  # a pool: <service>-<slot>
        if svc.pool and target == f"{svc.name}-{src}":
            return rules.route_target(ctx.store, svc.name, dst, pool=True)
    return target


@dataclass(frozen=True)
class FlipCt:
    ct: MoveCt
    ip: str  # its address in the rack it goes to
    storage: str  # where its /data is there


@dataclass(frozen=True)
class FlipPlan:
    to: int
    away: int
    cts: tuple[FlipCt, ...]
    routes: tuple[tuple[str, str], ...]  # (service, target in the rack it goes to)


@dataclass(frozen=True)
class Flip(Operation[FlipPlan, Move]):
    """Configure the move's CTs in the other rack (`forward`: the destination;
    else back in the source), in one transaction (the caller's): rows, addresses
    (new ones in the destination's /16, the old ones back on the way back),
    storage node, routes, the tenant's rack; the rack left clears the CTs' rows
    and keeps their tombstones (its HNs drop the CT configs, /data kept). Ends
    the hold."""

    move: Move
    forward: bool

    def check(self, ctx: Context) -> FlipPlan:
        m = self.move
        to, away = (m.dst, m.src) if self.forward else (m.src, m.dst)
        if m.flipped == self.forward:
            raise ConflictError(f"move {m.id}: the CTs are in {rack_name(to)} already")
        services: dict[int, bool] = {}
        for c in m.cts:
            cur = queries.find_ct(ctx.store, str(c.ctid))
            if cur.rack != away:
                raise ConflictError(f"move {m.id}: CT {c.ctid} is in {rack_name(cur.rack)}, not {rack_name(away)}")
            services[c.ctid] = cur.service is not None
        if self.forward:
            fresh = [c for c in m.cts if not c.dst_ip]
            ips = dict(zip((c.ctid for c in fresh), rules.addresses(ctx, to, [services[c.ctid] for c in fresh])))
            cts = tuple(FlipCt(c, c.dst_ip or ips[c.ctid], c.dst_storage) for c in m.cts)
        else:
            cts = tuple(FlipCt(c, c.src_ip, c.src_storage) for c in m.cts)
        routes = tuple((s, at_dst if self.forward else at_src) for s, (at_src, at_dst) in m.routes.items())
        return FlipPlan(to, away, cts, routes)

    def execute(self, ctx: Context, found: FlipPlan) -> Move:
        m, store, now = self.move, ctx.store, ctx.now()
        for f in found.cts:
            if self.forward:
                moverows.set_dst_ip(store, m, f.ct.ctid, f.ip)
            edits.rehome_ct(store, f.ct.ctid, found.to, f.ip, f.storage, now)
            left_ip = f.ct.src_ip if self.forward else (f.ct.dst_ip or "")
            if left_ip:
                rules.leave_rack(store, f.ct.ctid, f.ct.hostname, found.away, left_ip, purge=False, at=now,
                                 quarantine=ctx.dc.ip_quarantine)
        for service, target in found.routes:
            edits.retarget_route(store, m.tenant, service, target)
        edits.set_tenant_rack(store, m.tenant, found.to)
        what = f"CTs configured in {rack_name(found.to)}" + (
            ": " + ", ".join(f"{f.ct.hostname} {f.ct.src_ip} -> {f.ip}" for f in found.cts) if self.forward else
            " again, at their old addresses")
        return moverows.update(store, m, now, what, flipped=self.forward, hold=False)


def flip(store: Store, dc: DcTemplate, move: Move, now: float, forward: bool) -> Move:
    """Flip in the caller's transaction, stamped `now`."""
    return run(Context(store, dc, lambda: now), Flip(move, forward))
