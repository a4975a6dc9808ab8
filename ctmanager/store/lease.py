"""Who leads each rack: the lease row, and each manager's check-in row.

One lease row per rack: holder (a manager's name), epoch, and expiry on the
store's clock (Store.NOW_SQL: every manager compares with the same clock, never
its own). Taking a lease that is free or expired makes a new epoch (the old one
+ 1, and never less than the store's clock in seconds); renewing one moves its
expiry; releasing one ends it at once. The row stays, so the epoch only grows: it is the fencing token every manager write checks
(`check`, through Store.fence) and every action carries to the agents.

Taking a lease is a check-then-act under the store's write lock, so two
managers can never both take a rack's lease: whoever commits second finds it
held. A live lease is only renewed by the very run that holds it (its
instance); another run under the same name waits for it to expire, unless it
holds that name's lock (`own_name`).
Renewals, releases and check-ins are single statements, atomic by themselves:
on PostgreSQL they do not queue behind the DC's write lock (a long writer
elsewhere must not cost a rack its leader), and the fence check locks the
lease row (FOR UPDATE) so a renewal or takeover cannot slip in beside a fenced
write.

The check-in rows say who else is there (`ctmanager manager status`): each
manager, leader or standby, writes its role, epoch and when it last heard a
report, every ttl/3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import StoreError
from .db import Store

ROLES = ("leader", "standby", "stopped")


class LeaseLost(StoreError):
    """A write by a manager whose lease ended (another leads, or it expired)."""


@dataclass(frozen=True)
class Lease:
    rack: int
    holder: str  # the manager's name
    instance: str  # which run of it (a manager restarted under the same name takes a new epoch)
    detail: str  # e.g. "ctmanager run pid 4242 on mgr-101-a"
    epoch: int
    acquired: float  # store clock
    renewed: float  # store clock
    expires: float  # store clock

    def live(self, store_now: float) -> bool:
        return self.expires > store_now


@dataclass(frozen=True)
class CheckIn:
    rack: int
    name: str
    instance: str
    detail: str
    role: str
    epoch: int  # the epoch it leads with (leader), or led with last
    ttl: float  # its lease ttl
    seen: float  # store clock of its last check-in
    heard: float | None  # store clock of the newest report it heard
    version: str = ""  # its software version ('' from a manager older than schema v18)
    keys: str = ""  # the ids of the rack keys it holds: `current=ID[,next=ID][,prev=ID]`


def _lease(row: Any) -> Lease:
    return Lease(int(row["rack"]), str(row["holder"]), str(row["instance"]), str(row["detail"]), int(row["epoch"]),
                 float(row["acquired"]), float(row["renewed"]), float(row["expires"]))


def current(store: Store, rack: int) -> Lease | None:
    row = store.one("SELECT * FROM leases WHERE rack = ?", (rack,))
    return None if row is None else _lease(row)


def leases(store: Store) -> dict[int, Lease]:
    return {int(r["rack"]): _lease(r) for r in store.query("SELECT * FROM leases ORDER BY rack")}


def acquire(store: Store, rack: int, name: str, instance: str, detail: str, ttl: float, *,
            own_name: bool = False) -> Lease | None:
    """Take rack `rack`'s lease for `ttl` s if it is free or expired (a new epoch),
    or renew it if it is this instance's own. `own_name`: also take a live lease
    held under our name by another run (a new epoch) — only for a caller that
    holds the name's lock, so that run has ended (`ctmanager run`, cli/loop.py;
    it takes over from its own crashed run without waiting for the ttl). None:
    another run holds it."""
    # A plain read first: a standby's looks (4 a second) take no write lock, and read
    # only what they need (`current` and its Lease cost twice as much).
    seen = store.one("SELECT holder, expires FROM leases WHERE rack = ?", (rack,))
    if seen is not None and float(seen[1]) > store.now() and str(seen[0]) != name:
        return None  # (decided again under the lock below whenever it might be free)
    with store.transaction(config=False, fenced=False):
        now = float(store.one(f"SELECT {store.NOW_SQL}")[0])
        old = current(store, rack)
        if old is not None and old.live(now) and (old.holder != name or (old.instance != instance and not own_name)):
            return None
        if old is not None and old.live(now) and old.instance == instance:  # ours: a renewal
            epoch, acquired = old.epoch, old.acquired
        else:
            # Never below the store's clock in seconds: a store restored from a backup
            # (or made anew) still hands out epochs newer than any the HNs have seen.
            epoch, acquired = max((old.epoch if old else 0) + 1, int(now)), now
        store.execute("INSERT INTO leases (rack, holder, instance, detail, epoch, acquired, renewed, expires) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(rack) DO UPDATE SET holder = excluded.holder, "
                      "instance = excluded.instance, detail = excluded.detail, epoch = excluded.epoch, "
                      "acquired = excluded.acquired, renewed = excluded.renewed, expires = excluded.expires",
                      (rack, name, instance, detail, epoch, acquired, now, now + ttl))
        if old is None or old.epoch != epoch:
            store.event("manager.lead", f"rack-{rack}", f"{name} leads with epoch {epoch}")
        return Lease(rack, name, instance, detail, epoch, acquired, now, now + ttl)


def renew(store: Store, lease: Lease, ttl: float) -> Lease:
    """The same lease `ttl` s from now on the store's clock; LeaseLost if it ended."""
    with store.transaction(config=False, fenced=False, serialised=False):
        row = store.one(f"UPDATE leases SET renewed = {store.NOW_SQL}, expires = {store.NOW_SQL} + ? "
                        f"WHERE rack = ? AND holder = ? AND epoch = ? AND expires > {store.NOW_SQL} "
                        "RETURNING renewed, expires", (ttl, lease.rack, lease.holder, lease.epoch))
        if row is None:
            raise lost(store, lease)
        return Lease(lease.rack, lease.holder, lease.instance, lease.detail, lease.epoch, lease.acquired,
                     float(row[0]), float(row[1]))


def check(store: Store, lease: Lease) -> None:
    """Inside a write transaction: LeaseLost unless `lease` is still the rack's."""
    lock = " FOR UPDATE" if store.backend == "postgresql" else ""  # SQLite: the one write lock is held already
    row = store.one(f"SELECT 1 FROM leases WHERE rack = ? AND holder = ? AND epoch = ? AND expires > {store.NOW_SQL}"
                    f"{lock}", (lease.rack, lease.holder, lease.epoch))
    if row is None:
        raise lost(store, lease)


def lost(store: Store, lease: Lease) -> LeaseLost:
    now = store.one(f"SELECT {store.NOW_SQL}")[0]
    cur = current(store, lease.rack)
    if cur is None or (cur.holder == lease.holder and cur.epoch == lease.epoch):
        why = "it expired" if cur is not None and not cur.live(float(now)) else "it is gone"
    else:
        why = f"{cur.holder} took it with epoch {cur.epoch}"
    return LeaseLost(f"{store.where}: the lease of rack-{lease.rack} (epoch {lease.epoch}) was lost: {why}")


def release(store: Store, lease: Lease) -> bool:
    """End `lease` now (a standby may take the rack at once). False: it had ended."""
    with store.transaction(config=False, fenced=False, serialised=False):
        return bool(store.execute(f"UPDATE leases SET expires = {store.NOW_SQL} WHERE rack = ? AND holder = ? "
                                  f"AND epoch = ? AND expires > {store.NOW_SQL}",
                                  (lease.rack, lease.holder, lease.epoch)).rowcount)


_V = ("", ", version, keys")  # the columns a check-in with a version writes (schema v18)


def check_in(store: Store, rack: int, name: str, instance: str, detail: str, role: str, epoch: int,
             heard_ago: float | None, ttl: float = 6.0, version: str = "", keys: str = "") -> None:
    """`version`, `keys`: the manager's software version and the ids of the rack keys
    its running keyring holds (`current=ID,next=ID`); given by code of schema 18 on."""
    """Say (again) that manager `name` of rack `rack` runs, as `role`; it heard a
    report `heard_ago` s ago (None: none yet). Times become the store's clock."""
    if role not in ROLES:
        raise StoreError(f"internal: manager role {role!r}")
    with store.transaction(config=False, fenced=False, serialised=False):
        store.execute(
            f"INSERT INTO managers (rack, name, instance, detail, role, epoch, ttl, seen, heard{_V[bool(version)]}) "
            f"VALUES (?, ?, ?, ?, ?, ?, ?, {store.NOW_SQL}, {store.NOW_SQL} - ?{', ?, ?' if version else ''}) "
            "ON CONFLICT(rack, name) DO UPDATE SET "
            "instance = excluded.instance, detail = excluded.detail, role = excluded.role, epoch = excluded.epoch, "
            "ttl = excluded.ttl, seen = excluded.seen, heard = coalesce(excluded.heard, managers.heard)"
            f"{', version = excluded.version, keys = excluded.keys' if version else ''}",
            (rack, name, instance, detail, role, epoch, ttl, heard_ago, *((version, keys) if version else ())))


def check_ins(store: Store, rack: int | None = None) -> list[CheckIn]:
    rows = store.query("SELECT * FROM managers WHERE rack = ? ORDER BY name", (rack,)) if rack is not None else \
        store.query("SELECT * FROM managers ORDER BY rack, name")
    return [CheckIn(int(r["rack"]), str(r["name"]), str(r["instance"]), str(r["detail"]), str(r["role"]),
                    int(r["epoch"]), float(r["ttl"]), float(r["seen"]),
                    None if r["heard"] is None else float(r["heard"]),
                    *((str(r["version"] or ""), str(r["keys"] or "")) if "keys" in r.keys() else ("", "")))
            for r in rows]  # (`store migrate` reads older stores: no version, no keys)


@dataclass(frozen=True)
class ManagerView:
    """One manager of a rack as `manager status` shows it; ages in seconds."""

    rack: int
    name: str
    role: str  # leader | standby | down
    epoch: int
    detail: str
    lease_age: float | None  # the leader's: since its last renewal
    checked_in: float | None  # since its last check-in (None: never, e.g. a reconcile pass)
    heard: float | None  # since the newest report it heard
    why: str = ""  # for down: stopped, or silent
    version: str = ""  # its software version, as it checked in
    keys: str = ""  # the ids of the rack keys it holds, as it checked in


def view(store: Store, rack: int | None = None) -> list[ManagerView]:
    """Every manager of `rack` (or of every rack), its role judged on the store's
    clock: the leader holds the live lease; a standby checked in within the last
    4 s (three check-ins, and a second); anything else is down."""
    with store.snapshot():
        now = store.now()
        held = leases(store)
        rows = check_ins(store, rack)
    out: list[ManagerView] = []
    for c in rows:
        lease = held.get(c.rack)
        leads = lease is not None and lease.live(now) and lease.holder == c.name and lease.instance == c.instance
        silent = now - c.seen > 4.0  # three check-ins missed (manager/leading.py: every 1 s)
        role = "leader" if leads else "down" if c.role == "stopped" or silent else "standby"
        why = "stopped" if c.role == "stopped" else f"silent {now - c.seen:.0f}s" if role == "down" else ""
        out.append(ManagerView(c.rack, c.name, role, lease.epoch if leads and lease else c.epoch, c.detail,
                               round(now - lease.renewed, 1) if leads and lease else None,
                               round(max(now - c.seen, 0.0), 1),
                               None if c.heard is None else round(max(now - c.heard, 0.0), 1), why, c.version,
                               c.keys))
    for slot, lease in held.items():  # a leader without a check-in: a reconcile pass
        if (rack is None or slot == rack) and lease.live(now) and \
                not any(v.rack == slot and v.role == "leader" for v in out):
            out.append(ManagerView(slot, lease.holder, "leader", lease.epoch, lease.detail,
                                   round(now - lease.renewed, 1), None, None))
    return sorted(out, key=lambda v: (v.rack, v.name))


def leaders(store: Store) -> dict[int, tuple[str, int]]:
    """Rack -> (name, epoch) of its live lease's holder."""
    return {v.rack: (v.name, v.epoch) for v in view(store) if v.role == "leader"}
