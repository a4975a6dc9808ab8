"""The reconcile loop's state in the store: read the inputs of plan(), record
placements, rejections, the intent journal, the HNs' newest reports, and the
observed view that `ctmanager status` shows. The only I/O of the reconcile
package; plan() itself stays pure."""

from __future__ import annotations

from typing import Iterable

from . import queries
from ..dc.model import DcTemplate
from ..wire.reports import Report, ReportError, parse_body
from .db import Store
from ..reconcile.state import Action, Configured, Hn, Observed, Placements, Settings


def configured(store: Store, dc: DcTemplate, slot: int) -> Configured:
    cts = {ct.ctid: ct for ct in queries.cts(store, rack=slot)}
    hns = {}
    for n in queries.nodes(store, rack=slot):
        if n.role == "compute":
            sku = dc.skus[n.sku]
            hns[n.hostname] = Hn(n.hostname, sku.memory, sku.disk, n.drained)
    removed = {r["ctid"]: bool(r["purge"]) for r in store.query("SELECT ctid, purge FROM removed")}
    return Configured(cts, hns, removed)


def placements(store: Store, now: float) -> Placements:
    where = {r[0]: r[1] for r in store.query("SELECT ctid, hn FROM placements")}
    rejected = {(r[0], r[1]): r[2] for r in store.query("SELECT ctid, hn, until FROM rejections WHERE until > ?", (now,))}
    return Placements(where, rejected)


def observed(store: Store) -> Observed:
    obs = Observed()
    for r in store.query("SELECT hn, received_at, body FROM hn_reports"):
        try:
            obs.update(parse_body(r["body"]), r["received_at"])
        except ReportError:
            continue  # written by us, so only a newer format could fail: treat as no report
    return obs


def save_reports(store: Store, reports: Iterable[tuple[Report, float]]) -> None:
    store.executemany(
        "INSERT INTO hn_reports (hn, received_at, body) VALUES (?, ?, ?) "
        "ON CONFLICT(hn) DO UPDATE SET received_at = excluded.received_at, body = excluded.body",
        [(r.hn, at, r.body().decode()) for r, at in reports])


def save_placements(store: Store, place: dict[int, str], now: float) -> None:
    store.executemany(
        "INSERT INTO placements (ctid, hn, placed_at) VALUES (?, ?, ?) "
        "ON CONFLICT(ctid) DO UPDATE SET hn = excluded.hn, placed_at = excluded.placed_at",
        [(c, hn, now) for c, hn in place.items()])
    for ctid, hn in place.items():
        store.event("ct.place", str(ctid), hn)


def journal(store: Store, actions: Iterable[Action], now: float) -> list[int]:
    """Write the intent before acting: a manager that dies mid-way finds it on restart."""
    ids = []
    for a in actions:
        cur = store.execute(
            "INSERT INTO journal (at, kind, ctid, hn, reason, purge, state) VALUES (?, ?, ?, ?, ?, ?, 'pending')",
            (now, a.kind, a.ctid, a.hn, a.reason, int(a.purge)))
        ids.append(int(cur.lastrowid or 0))
    return ids


def finish(store: Store, journal_id: int, a: Action, result: str, message: str, now: float,
           settings: Settings) -> None:
    """Close an intent with the outcome of its action (done, rejected, failed, ...)."""
    state = result if result in ("done", "rejected") else "failed"
    store.execute("UPDATE journal SET state = ?, detail = ?, finished_at = ? WHERE id = ?",
                  (state, message, now, journal_id))
    if result == "rejected":
        store.execute(
            "INSERT INTO rejections (ctid, hn, until, reason) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(ctid, hn) DO UPDATE SET until = excluded.until, reason = excluded.reason",
            (a.ctid, a.hn, now + settings.reject_memory, message))
        store.event("ct.rejected", str(a.ctid), f"{a.hn}: {message}")


def interrupted(store: Store, now: float) -> list[str]:
    """Intents a previous manager wrote but never finished. The plan is level-based
    and placements were saved before acting, so the next plan redoes exactly what
    is still needed, on the same HN; these are closed and reported."""
    rows = store.query("SELECT id, kind, ctid, hn FROM journal WHERE state = 'pending' ORDER BY id")
    store.execute("UPDATE journal SET state = 'failed', detail = 'interrupted: the manager stopped; replanned', "
                     "finished_at = ? WHERE state = 'pending'", (now,))
    return [f"{r['kind']} {r['ctid']} on {r['hn']}" for r in rows]


def save_observed(store: Store, cfg: Configured, obs: Observed, place: Placements, now: float,
                  settings: Settings, only: Iterable[int] | None = None) -> None:
    """The status view: for each configured CT (or those in `only`), where it runs
    (or should) and its OPST there; UNKNOWN when that HN's reports are stale."""
    rows = []
    ctids = list(cfg.cts) if only is None else [c for c in only if c in cfg.cts]
    since_of: dict[str, dict[int, float]] = {}  # per HN, built on first use
    for ctid in ctids:
        here = obs.where.get(ctid, {})
        up = sorted(hn for hn, s in here.items() if s == "UP" and obs.known(hn, now, settings))
        hn = up[0] if up else place.where.get(ctid) or (sorted(here)[0] if here else None)
        if hn is None:
            opst, since = "UNKNOWN", None
        elif not obs.known(hn, now, settings):
            opst, since = "UNKNOWN", None
        else:
            opst = here.get(hn, "DOWN")
            if hn not in since_of:
                since_of[hn] = {c.ctid: c.since for c in obs.reports[hn].cts}
            since = since_of[hn].get(ctid)
        rows.append((ctid, hn, opst, since))
    if only is None:
        store.execute("DELETE FROM observed")
    store.executemany("INSERT OR REPLACE INTO observed (ctid, hn, opst, since) VALUES (?, ?, ?, ?)", rows)


def forget_removed(store: Store, cfg: Configured, obs: Observed, now: float, settings: Settings) -> list[int]:
    """Drop tombstones of removed CTs that no HN has any more, once every HN is known."""
    if not all(obs.known(hn, now, settings) for hn in cfg.hns):
        return []
    gone = [c for c in cfg.removed if c not in obs.where]
    store.executemany("DELETE FROM removed WHERE ctid = ?", [(c,) for c in gone])
    return gone
