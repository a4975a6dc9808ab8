"""Retention of the manager's history: the journal of finished intents and the
audit events would grow forever otherwise."""

from __future__ import annotations

from .db import Store

KEEP_EVENTS_MAX = 1_000_000  # rows: a cap besides the age, for a runaway writer


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
