"""The reconcile loop's state in the store: read the inputs of plan(), record
placements, rejections, the intent journal, the HNs' newest reports, and the
observed view that `ctmanager status` shows. The only I/O of the reconcile
package; plan() itself stays pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import NamedTuple

from ..dc.model import Ct, DcTemplate
from ..reconcile.state import Action, Configured, Hn, JournalState, Observed, Placements, Settings
from ..wire.reports import Report, ReportError, parse_body
from ..wire.spec import spec_for, spec_hash
from . import moves, queries
from .db import Store


def configured(store: Store, dc: DcTemplate, slot: int) -> Configured:
    """Rack `slot`'s configured state. The CTs of a tenant whose move holds them
    (a cutover, store/moves.py) count as ADMST DOWN, whatever ops set."""
    held = moves.held(store)
    cts = {ct.ctid: replace(ct, admst="DOWN") if ct.tenant in held else ct for ct in queries.cts(store, rack=slot)}
    hns = {}
    for n in queries.nodes(store, rack=slot):
        if n.role == "compute":
            sku = dc.skus[n.sku]
            hns[n.hostname] = Hn(n.hostname, sku.memory, sku.disk, n.drained)
    removed = {r["ct_id"]: bool(r["purge"])
               for r in store.query("SELECT ct_id, purge FROM removed WHERE rack IN (?, 0)", (slot,))}
    looped = {r[0]: int(r[1]) for r in store.query("SELECT ct_id, count FROM crash_loops") if r[0] in cts}
    return Configured(cts, hns, removed, spec_hashes(store, dc, cts.values()), looped,
                      frozenset(c.ctid for c in cts.values() if c.tenant in held))


def spec_hashes(store: Store, dc: DcTemplate, cts: Iterable[Ct]) -> dict[int, str]:
    """CTID -> hash of the spec the manager sends for it (wire.spec). Building and
    hashing a spec costs ~30 us, 0.3 s for a 10,000-CT rack on every reload of the
    configuration; so each CT's hash is kept on the store handle, keyed by the CT's
    whole (frozen) value: any change to its row is a new key."""
    cached = store.cache.get("spec_hashes")
    old: dict[Ct, str] = cached[1] if cached is not None and cached[0] is dc else {}
    new = {ct: old.get(ct) or spec_hash(spec_for(ct, dc)) for ct in cts}
    store.cache["spec_hashes"] = (dc, new)  # only the current CTs: the cache never outgrows the rack
    return {ct.ctid: h for ct, h in new.items()}


def mark_crash_loops(store: Store, loops: Iterable[tuple[int, int]], now: float) -> None:
    """Record CTs the manager found in a crash loop (CTID, crashes): they stay
    down until `ct reset` or `ct set --admst up` deletes the row (operations/cts.py).
    The caller holds a `transaction(config=False)`: this is the loop's own state."""
    for ctid, count in loops:
        store.execute("INSERT INTO crash_loops (ct_id, since, count) VALUES (?, ?, ?) "
                      "ON CONFLICT(ct_id) DO UPDATE SET count = excluded.count", (ctid, now, count))
        store.event("ct.crash_loop", str(ctid), f"{count} crashes; left down")


def placements(store: Store, now: float, slot: int) -> Placements:
    """Where rack `slot`'s CTs should run, and the HNs that refused them lately."""
    where = {r[0]: r[1] for r in store.query(
        "SELECT ct_id, hn FROM placements WHERE ct_id IN (SELECT ct_id FROM cts WHERE rack = ?)", (slot,))}
    rejected = {(r[0], r[1]): r[2] for r in store.query(
        "SELECT ct_id, hn, until FROM rejections WHERE until > ? AND rack IN (?, 0)", (now, slot))}
    return Placements(where, rejected)


def observed(store: Store, slot: int, *, store_clock: bool = False) -> Observed:
    """The newest stored report of each of rack `slot`'s HNs, as received at on
    the manager's clock (its own restart), or on the store's (`store_clock`: a
    CLI pass judging them against Store.now())."""
    obs = Observed()
    when = "stored_at" if store_clock else "received_at"
    for r in store.query(f"SELECT hn, {when}, body FROM hn_reports "  # noqa: S608 - one of two column names
                         "WHERE hn IN (SELECT hostname FROM nodes WHERE rack = ?)", (slot,)):
        try:
            obs.update(parse_body(r["body"]), r[1])
        except ReportError:
            continue  # written by us, so only a newer format could fail: treat as no report
    return obs


def save_reports(store: Store, reports: Iterable[tuple[Report, float]]) -> None:
    store.executemany(
        f"INSERT INTO hn_reports (hn, received_at, body, stored_at) VALUES (?, ?, ?, {store.NOW_SQL}) "
        "ON CONFLICT(hn) DO UPDATE SET received_at = excluded.received_at, body = excluded.body, "
        "stored_at = excluded.stored_at",
        [(r.hn, at, r.body().decode()) for r, at in reports])


def touch_reports(store: Store, received: Iterable[tuple[str, float]]) -> None:
    """Only the time of each HN's newest report: its body says nothing new."""
    store.executemany(f"UPDATE hn_reports SET received_at = ?, stored_at = {store.NOW_SQL} WHERE hn = ?",
                      [(at, hn) for hn, at in received])


def save_placements(store: Store, place: Mapping[int, str], now: float,
                    was: Mapping[int, str | None] | None = None) -> set[int]:
    """Record new placements. With `was` (the placement each CT had when the plan
    was made), check-then-act: a placement someone else changed meanwhile (a
    `ct move` committed during the tick) is left as it is, and its CTID returned
    so the caller drops the actions it planned from the old view."""
    lost: set[int] = set()
    for ctid, hn in place.items():
        if was is None:
            store.execute("INSERT INTO placements (ct_id, hn, placed_at) VALUES (?, ?, ?) ON CONFLICT(ct_id) "
                          "DO UPDATE SET hn = excluded.hn, placed_at = excluded.placed_at", (ctid, hn, now))
        else:
            row = store.one("SELECT hn FROM placements WHERE ct_id = ?", (ctid,))
            if (None if row is None else row[0]) != was.get(ctid):
                lost.add(ctid)
                continue
            store.execute("INSERT INTO placements (ct_id, hn, placed_at) VALUES (?, ?, ?) ON CONFLICT(ct_id) "
                          "DO UPDATE SET hn = excluded.hn, placed_at = excluded.placed_at", (ctid, hn, now))
        store.event("ct.place", str(ctid), hn)
    return lost


STARTS = ("start", "set")  # actions that may bring a CT up, or write its config: re-checked before they are journaled


def journal(store: Store, actions: Iterable[Action], now: float, slot: int, epoch: int = 0
            ) -> list[tuple[Action, int]]:
    """Write the intent before acting: a manager that dies mid-way finds it on
    restart. `epoch`: the lease's it was decided under. A start or set is
    re-checked here, inside the caller's transaction, against the CT's current
    row: a plan may have been decided on a configuration read before a `ct set`,
    a tenant move's hold or its flip committed (the store's write lock orders
    them), and what no longer holds is dropped, not handed out. Returns the
    (action, journal id) of each kept one, in order."""
    kept = []
    for a in actions:
        if a.kind in STARTS and not _may_start(store, a, slot):
            continue
        row = store.execute(
            "INSERT INTO journal (at, kind, ct_id, hn, reason, purge, state, rack, epoch) "
            "VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?) RETURNING id",
            (now, a.kind, a.ctid, a.hn, a.reason, int(a.purge), slot, epoch)).fetchall()[0]
        kept.append((a, int(row[0])))
    return kept


def _may_start(store: Store, a: Action, slot: int) -> bool:
    """The CT is still configured in rack `slot`, and (a start) ADMST UP, not held
    by a tenant move, not left down in a crash loop."""
    row = store.one("SELECT c.rack, c.admst, EXISTS (SELECT 1 FROM moves m WHERE m.tenant = c.tenant AND m.hold = 1 "
                    "AND m.finished_at IS NULL), EXISTS (SELECT 1 FROM crash_loops l WHERE l.ct_id = c.ct_id) "
                    "FROM cts c WHERE c.ct_id = ?", (a.ctid,))
    if row is None or int(row[0]) != slot:
        return False
    return a.kind != "start" or (row[1] == "UP" and not row[2] and not row[3])


def finish(store: Store, journal_id: int, a: Action, result: str, message: str, now: float,
           settings: Settings, slot: int) -> None:
    """Close an intent with the outcome of its action (done, rejected, failed, ...)."""
    state = JournalState.of(result)
    store.execute("UPDATE journal SET state = ?, detail = ?, finished_at = ? WHERE id = ?",
                  (state, message, now, journal_id))
    if state == JournalState.REJECTED:
        store.execute(
            "INSERT INTO rejections (ct_id, hn, until, reason, rack) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(ct_id, hn) DO UPDATE SET until = excluded.until, reason = excluded.reason",
            (a.ctid, a.hn, now + settings.reject_memory, message, slot))
        store.event("ct.rejected", str(a.ctid), f"{a.hn}: {message}")


class Interrupted(NamedTuple):
    kind: str
    ctid: int
    hn: str

    def __str__(self) -> str:
        return f"{self.kind} {self.ctid} on {self.hn}"


def interrupted(store: Store, now: float, slot: int) -> list[Interrupted]:
    """Intents a previous manager of rack `slot` wrote but never finished. The plan
    is level-based and placements were saved before acting, so the next plan
    redoes exactly what is still needed, on the same HN; these are closed and
    returned (the new leader leaves their CTs alone until each HN has settled its
    epoch: manager/core.py). Another rack's pending intents are its manager's."""
    rows = store.query("SELECT id, kind, ct_id, hn FROM journal WHERE state = 'pending' AND rack IN (?, 0) "
                       "ORDER BY id", (slot,))
    store.execute("UPDATE journal SET state = 'failed', detail = 'interrupted: the manager stopped; replanned', "
                  "finished_at = ? WHERE state = 'pending' AND rack IN (?, 0)", (now, slot))
    return [Interrupted(str(r["kind"]), int(r["ct_id"]), str(r["hn"])) for r in rows]


def pending_before(store: Store, before: float, slot: int) -> list[tuple[str, int, str]]:
    """Rack `slot`'s intents still pending that were written before `before`: (kind, CTID, HN)."""
    return [(r[0], r[1], r[2]) for r in store.query(
        "SELECT kind, ct_id, hn FROM journal WHERE state = 'pending' AND at < ? AND rack IN (?, 0) ORDER BY id",
        (before, slot))]


ObservedRow = tuple[int, str | None, str, float | None]  # (CTID, HN, OPST, since)


def observed_changes(cfg: Configured, obs: Observed, place: Placements, now: float, settings: Settings,
                     only: Iterable[int] | None, written: Mapping[int, ObservedRow]) -> tuple[list[ObservedRow], list[int]]:
    """The status view: for each configured CT (or those in `only`), where it runs
    (or should) and its OPST there; UNKNOWN when that HN's reports are stale.
    Returns the rows that differ from `written` (what the store holds) and, on a
    full pass, the CTIDs whose rows must go. Pure: a steady rack writes nothing."""
    rows: list[ObservedRow] = []
    ctids = list(cfg.cts) if only is None else [c for c in only if c in cfg.cts]
    since_of: dict[str, dict[int, float]] = {}  # per HN, built on first use
    ok = obs.known_at(now, settings)
    for ctid in ctids:
        here = obs.where.get(ctid, {})
        up = [hn for hn, s in here.items() if s == "UP" and ok[hn]]
        hn = min(up) if up else place.where.get(ctid) or (min(here) if here else None)
        if hn is None:
            opst, since = "UNKNOWN", None
        elif not ok[hn]:
            opst, since = "UNKNOWN", None
        else:
            opst = here.get(hn, "DOWN")
            if hn not in since_of:
                since_of[hn] = {c.ctid: c.since for c in obs.reports[hn].cts}
            since = since_of[hn].get(ctid)
        row = (ctid, hn, opst, since)
        if written.get(ctid) != row:
            rows.append(row)
    gone = [c for c in written if c not in cfg.cts] if only is None else []
    return rows, gone


def save_observed(store: Store, rows: list[ObservedRow], gone: list[int], written: dict[int, ObservedRow],
                  slot: int, *, everything: bool = False) -> None:
    """Write rack `slot`'s status view changes; `everything`: the store's rows are
    unknown (first pass of this process), so all others of this rack go (and
    rows of unknown rack for CTs no rack has any more)."""
    if everything:
        store.execute("DELETE FROM observed WHERE rack = ? OR (rack = 0 AND ct_id NOT IN (SELECT ct_id FROM cts))",
                      (slot,))
    store.executemany("DELETE FROM observed WHERE ct_id = ? AND rack IN (?, 0)", [(c, slot) for c in gone])
    store.executemany("INSERT INTO observed (ct_id, hn, opst, since, rack) VALUES (?, ?, ?, ?, ?) ON CONFLICT(ct_id) "
                      "DO UPDATE SET hn = excluded.hn, opst = excluded.opst, since = excluded.since, "
                      "rack = excluded.rack", [(*r, slot) for r in rows])
    for c in gone:
        written.pop(c, None)
    written.update((r[0], r) for r in rows)


def forget_removed(store: Store, cfg: Configured, obs: Observed, now: float, settings: Settings,
                   slot: int) -> list[int]:
    """Drop rack `slot`'s tombstones of removed CTs that none of its HNs has any
    more, once every one of them is known."""
    if not all(obs.known(hn, now, settings) for hn in cfg.hns):
        return []
    # A tombstone of unknown rack (from before v11) is claimed by the rack whose HN
    # still has the CT, and only a tombstone of this rack is ever dropped here.
    store.executemany("UPDATE removed SET rack = ? WHERE ct_id = ? AND rack = 0",
                      [(slot, c) for c in cfg.removed if c in obs.where])
    gone = [c for c in cfg.removed if c not in obs.where]
    store.executemany("DELETE FROM removed WHERE ct_id = ? AND rack = ?", [(c, slot) for c in gone])
    return gone
