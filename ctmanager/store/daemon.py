"""The manager daemon's own bookkeeping rows: who holds a rack (so `ctmanager
reconcile` does not act beside a running daemon) and retention of the journal
and the audit events (both would grow forever otherwise).

The holder is kept in `meta` as `holder:rack-N` = JSON {holder, since, at,
stored}; the daemon refreshes it with every full plan. `stored` is the store's
clock at the refresh, which whoever checks compares with the store's clock (a
CLI on another machine must not judge a live manager by its own clock). A
holder not refreshed for `HOLD_STALE` seconds has stopped (or hangs): it no
longer holds the rack."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import StoreError
from .db import Store

HOLD_STALE = 15.0  # s without a refresh after which a holder is gone
KEEP_EVENTS_MAX = 1_000_000  # rows: a cap besides the age, for a runaway writer


@dataclass(frozen=True)
class Holder:
    holder: str  # e.g. "ctmanager run pid 4242 on mgr-101"
    since: float
    at: float  # last refresh, on the holder's clock
    stored: float  # last refresh, on the store's clock

    def live(self, store_now: float) -> bool:
        """`store_now`: Store.now()."""
        return store_now - self.stored <= HOLD_STALE


def _key(slot: int) -> str:
    return f"holder:rack-{slot}"


def hold(store: Store, slot: int, holder: str, since: float, now: float) -> None:
    """Say (again) that `holder` manages rack `slot`. Call inside a transaction."""
    store.set_meta(_key(slot), json.dumps({"holder": holder, "since": since, "at": now, "stored": store.now()}))


def holder(store: Store, slot: int) -> Holder | None:
    text = store.get_meta(_key(slot))
    if text is None:
        return None
    try:
        d = json.loads(text)
        return Holder(str(d["holder"]), float(d["since"]), float(d["at"]), float(d.get("stored", d["at"])))
    except (ValueError, KeyError, TypeError):
        raise StoreError(f"{store.where}: unreadable {_key(slot)} in meta: {text[:80]!r}") from None


def release(store: Store, slot: int, holder_name: str) -> None:
    with store.transaction(config=False):
        current = holder(store, slot)
        if current is not None and current.holder == holder_name:
            store.execute("DELETE FROM meta WHERE key = ?", (_key(slot),))


def prune(store: Store, now: float, journal_keep: float, events_keep: float, slot: int) -> tuple[int, int]:
    """Drop rack `slot`'s finished intents older than `journal_keep` s and audit
    events older than `events_keep` s (and beyond the newest KEEP_EVENTS_MAX;
    events are the DC's: every manager prunes them, the shortest keep wins).
    Returns the counts."""
    with store.transaction(config=False):
        j = store.execute("DELETE FROM journal WHERE state != 'pending' AND coalesce(finished_at, at) < ? "
                          "AND rack IN (?, 0)", (now - journal_keep, slot)).rowcount
        e = store.execute("DELETE FROM events WHERE at < ?", (now - events_keep,)).rowcount
        e += store.execute("DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?",
                           (KEEP_EVENTS_MAX,)).rowcount
    return j, e
