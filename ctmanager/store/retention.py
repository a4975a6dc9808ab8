"""Retention of the manager's history: the journal of finished intents and the
audit events would grow forever otherwise."""

from __future__ import annotations

from .db import Store

KEEP_EVENTS_MAX = 1_000_000  # rows: a cap besides the age, for a runaway writer
BATCH = 10_000  # rows deleted per transaction


def prune(store: Store, now: float, journal_keep: float, events_keep: float, slot: int) -> tuple[int, int]:
    """Drop rack `slot`'s finished intents older than `journal_keep` s and audit
    events older than `events_keep` s (and beyond the newest KEEP_EVENTS_MAX;
    events are the DC's: every manager prunes them, the shortest keep wins).
    Returns the counts."""
    j = e = 0
    while True:  # in batches: one long transaction would hold the DC's write lock (every rack's writes)
        with store.transaction(config=False):
            n = store.execute("DELETE FROM journal WHERE id IN (SELECT id FROM journal WHERE state != 'pending' "
                              "AND coalesce(finished_at, at) < ? AND rack IN (?, 0) LIMIT ?)",
                              (now - journal_keep, slot, BATCH)).rowcount
            m = store.execute("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < ? OR id <= "
                              "(SELECT max(id) FROM events) - ? LIMIT ?)",
                              (now - events_keep, KEEP_EVENTS_MAX, BATCH)).rowcount
        j, e = j + n, e + m
        if n < BATCH and m < BATCH:
            return j, e
