"""Operations on CTs: add, set, reset (its crash loop), remove, and place on an HN.

A CT gets a CTID that is never given again, an address of its rack's /16
(rules.addresses) and a storage node for its /data (rules.storage_node);
removed, it leaves its rack (rules.leave_rack: rows cleared, a tombstone).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

from .. import validate as v
from ..dc import ipam, names
from ..dc.model import ADMST_VALUES, Admst, Ct, DcTemplate, Resources, rack_name
from ..errors import ConflictError, InputError
from ..store import edits, queries
from . import rules
from .base import Context, Operation, not_a_move_target, not_moving


@dataclass(frozen=True)
class NewCt:
    ct: Ct
    next_ctid: int | None  # the CTID counter after this one (None: an explicit CTID leaves it alone)


@dataclass(frozen=True)
class AddCt(Operation[NewCt, Ct]):
    """A new CT in rack `rack` (a tenant's, a rack service's, or neither's)."""

    hostname: str
    rack: int
    resources: Resources
    tenant: str | None = None
    service: str | None = None
    env: str | None = None
    admst: str = "UP"
    apps: tuple[str, ...] = ()
    ctid: int | None = None

    def check(self, ctx: Context) -> NewCt:
        store, dc = ctx.store, ctx.dc
        hostname = v.hostname(self.hostname, "hostname")
        apps = tuple(v.label(a, "apps") for a in self.apps)
        env = environment(dc, self.env or dc.environments[0])
        admst = parse_admst(self.admst)
        rules.rack_installed(store, self.rack)
        if self.tenant is not None and queries.tenant_rack(store, self.tenant) != self.rack:
            raise InputError(f"tenant {self.tenant!r} lives in {rack_name(queries.tenant_rack(store, self.tenant))}, "
                             f"not {rack_name(self.rack)}")
        not_moving(store, self.tenant)
        rules.hostname_free(ctx, hostname)
        # not a name of another kind (a routing name, a node's, a pool's…) and it fits DNS: the
        # records this CT implies are computable before anything is written (dc/names.py)
        names.ct_hostname(dc, hostname, "hostname", service=self.service, rack=self.rack)
        if self.ctid is None:
            # The counter only grows; CTIDs at or above it were taken by explicit --ctid.
            counter = edits.ctid_counter(store) or dc.first_ctid
            ctid = ipam.next_ctid(counter, edits.ctids_from(store, counter))
            next_ctid: int | None = ctid + 1
        else:
            # An explicit CTID leaves the counter alone: a typo such as 2147483644
            # must not use up the range for everyone after it.
            ctid = v.integer(self.ctid, "ctid", minimum=101, maximum=v.MAX_CTID)
            ctid_unused(ctx, ctid)
            next_ctid = None
        (ip,) = rules.addresses(ctx, self.rack, (self.service is not None,))
        storage = rules.storage_node(store, self.rack)
        ct = Ct(ctid, hostname, self.rack, self.tenant, self.service, env, ip, storage, admst, self.resources, apps)
        return NewCt(ct, next_ctid)

    def execute(self, ctx: Context, found: NewCt) -> Ct:
        ct, now = found.ct, ctx.now()
        if found.next_ctid is not None:
            edits.set_ctid_counter(ctx.store, found.next_ctid)
        edits.record_ctid(ctx.store, ct.ctid, ct.hostname, now)
        edits.insert_ct(ctx.store, ct, now)
        ctx.store.event("ct.add", str(ct.ctid), f"{ct.hostname} {ct.ip} {rack_name(ct.rack)}")
        return ct


@dataclass(frozen=True)
class CtChange:
    ct: Ct
    admst: Admst
    apps: tuple[str, ...]
    env: str
    resources: Resources
    crash_loop: tuple[int, float] | None  # cleared by `--admst up`


@dataclass(frozen=True)
class SetCt(Operation[CtChange, Ct]):
    """Change a CT's resources, ADMST, apps or environment (None: unchanged).
    `admst="UP"`, even when already up, also clears its crash loop: "start it again"."""

    ref: str
    resources: Resources | None = None
    admst: str | None = None
    apps: tuple[str, ...] | None = None
    env: str | None = None

    def check(self, ctx: Context) -> CtChange:
        ct = queries.find_ct(ctx.store, self.ref)
        not_moving(ctx.store, ct.tenant, online_ok=True)  # the move holds, flips and starts its CTs
        admst = parse_admst(self.admst) if self.admst is not None else ct.admst
        apps = tuple(v.label(a, "apps") for a in self.apps) if self.apps is not None else ct.apps
        env = environment(ctx.dc, self.env if self.env is not None else ct.env)
        loop = edits.crash_loop(ctx.store, ct.ctid) if self.admst is not None and admst == "UP" else None
        return CtChange(ct, admst, apps, env, self.resources or ct.resources, loop)

    def execute(self, ctx: Context, found: CtChange) -> Ct:
        ct = found.ct
        edits.update_ct(ctx.store, ct.ctid, admst=found.admst, apps=found.apps, env=found.env,
                        resources=found.resources, at=ctx.now())
        ctx.store.event("ct.set", str(ct.ctid), f"admst={found.admst}")
        if found.crash_loop is not None:
            clear_crash_loop(ctx, ct.ctid, found.crash_loop)
        return queries.find_ct(ctx.store, str(ct.ctid))


@dataclass(frozen=True)
class CrashLoop:
    ct: Ct
    loop: tuple[int, float] | None  # (crashes, since), if the manager leaves it down


@dataclass(frozen=True)
class ResetCt(Operation[CrashLoop, tuple[Ct, tuple[int, float] | None]]):
    """Clear a CT's crash loop: the manager starts it again, and counts its
    crashes from zero. Gives the CT and what was cleared (crashes, since), if any."""

    ref: str

    def check(self, ctx: Context) -> CrashLoop:
        ct = queries.find_ct(ctx.store, self.ref)
        not_moving(ctx.store, ct.tenant, online_ok=True)
        return CrashLoop(ct, edits.crash_loop(ctx.store, ct.ctid))

    def execute(self, ctx: Context, found: CrashLoop) -> tuple[Ct, tuple[int, float] | None]:
        if found.loop is not None:
            clear_crash_loop(ctx, found.ct.ctid, found.loop)
        return found.ct, found.loop


@dataclass(frozen=True)
class RmCt(Operation[Ct, Ct]):
    """Remove a CT from the configuration: it leaves its rack, whose HNs destroy
    it (its /data kept unless `purge`). A tenant's core CT goes only with its
    tenant (`as_tenant`); a CT a route points at, not before the route moves."""

    ref: str
    as_tenant: bool = False
    purge: bool = False

    def check(self, ctx: Context) -> Ct:
        ct = queries.find_ct(ctx.store, self.ref)
        not_moving(ctx.store, ct.tenant)
        not_a_move_target(ctx.store, ct.hostname)
        if ct.tenant is not None and ct.hostname == ct.tenant and not self.as_tenant:
            raise ConflictError(f"CT {ct.hostname} is tenant {ct.tenant}'s core CT; remove the tenant instead: "
                                f"ctmanager tenant rm {ct.tenant}")
        users = rules.route_users(ctx, ct)
        if users:
            raise ConflictError(f"CT {ct.hostname} is the target of route(s) {', '.join(users)}; move them first: "
                                "ctmanager route set TENANT SERVICE TARGET")
        return ct

    def execute(self, ctx: Context, found: Ct) -> Ct:
        rules.leave_rack(ctx.store, found.ctid, found.hostname, found.rack, found.ip, purge=self.purge, at=ctx.now(),
                         quarantine=ctx.dc.ip_quarantine)
        edits.delete_ct(ctx.store, found.ctid)
        ctx.store.event("ct.rm", str(found.ctid), found.hostname + (" (purge /data)" if self.purge else ""))
        return found


@dataclass(frozen=True)
class Placing:
    ct: Ct
    hn: str
    was: str | None  # the HN it was placed on


@dataclass(frozen=True)
class PlaceCt(Operation[Placing, tuple[Ct, str | None]]):
    """Place a CT on another HN of its rack (the reconcile loop stops it on the
    old one first). Gives the CT and where it was placed before."""

    ref: str
    hn: str

    def check(self, ctx: Context) -> Placing:
        ct = queries.find_ct(ctx.store, self.ref)
        not_moving(ctx.store, ct.tenant)  # its rack may change under it: the move places it
        node = queries.compute_node(ctx.store, self.hn)
        if node.rack != ct.rack:
            raise InputError(f"{self.hn} is in rack-{node.rack}; CT {ct.ctid} lives in rack-{ct.rack}")
        if node.drained:
            raise InputError(f"{self.hn} is drained; undrain it first: ctmanager hn undrain {self.hn}")
        return Placing(ct, self.hn, queries.placement(ctx.store, ct.ctid))

    def execute(self, ctx: Context, found: Placing) -> tuple[Ct, str | None]:
        edits.place(ctx.store, found.ct.ctid, found.hn, ctx.now())
        edits.forget_rejection(ctx.store, found.ct.ctid, found.hn)  # asked for there: it may be tried again
        ctx.store.event("ct.move", str(found.ct.ctid), f"{found.was or '-'} -> {found.hn}")
        return found.ct, found.was


# ---- helpers ---------------------------------------------------------------------
def clear_crash_loop(ctx: Context, ctid: int, loop: tuple[int, float]) -> None:
    edits.clear_ct_rows(ctx.store, ctid, ("crash_loops",))
    ctx.store.event("ct.reset", str(ctid), f"crash loop cleared ({loop[0]} crashes)")


def ctid_unused(ctx: Context, ctid: int) -> None:
    """An explicit CTID: never one given before, to a CT here now or removed."""
    holder = edits.ctid_holder(ctx.store, ctid)
    if holder is not None:
        raise ConflictError(f"CTID {ctid} is already used by {holder}")
    given = edits.ctid_given(ctx.store, ctid)
    if given is not None:
        raise ConflictError(f"CTID {ctid} was given to {given[0]} on {_when(given[1])}; a CTID is never reused "
                            "(its /data may still be kept): leave out --ctid to get a new one")


def environment(dc: DcTemplate, env: str) -> str:
    if env not in dc.environments:
        raise InputError(f"unknown environment {env!r} (the DC has: {', '.join(dc.environments)})", where="env")
    return env


def parse_admst(value: str) -> Admst:
    up = str(value).upper()
    if up not in ADMST_VALUES:
        raise InputError(f"must be up or down (got {value!r})", where="admst")
    return cast(Admst, up)


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))
