"""The DNS publisher's rows: the ownership registry (`dns_published`: record sets
ctmanager created and the server confirmed), names someone else holds
(`dns_conflicts`) and the server settings (`dns_state`).

Publishing is not a configuration change: these writes never wake the manager
or ctmailmap (`transaction(config=False)`); `dns configure` is one."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable

from .db import Row, Store
from .rows import checked

LOCK = "dns"  # Store.lock name: held by whoever works out and sends the pending changes

# (name, rdtype, ttl, values) as published
Published = tuple[str, str, int, tuple[str, ...]]


def published(store: Store) -> list[Published]:
    def one(r: Row) -> Published:
        vals = json.loads(r[3])
        if not isinstance(vals, list) or not all(isinstance(x, str) for x in vals) or r[1] not in ("A", "CNAME"):
            raise ValueError("values must be a list of strings, the type A or CNAME")
        return str(r[0]), str(r[1]), int(r[2]), tuple(vals)
    return [checked(f"published DNS record {str(r[0])[:80]!r}", functools.partial(one, r))
            for r in store.query("SELECT name, rdtype, ttl, vals FROM dns_published")]


def owners(store: Store) -> dict[str, int]:
    """Published name -> the rack whose manager publishes it (0: not known)."""
    return {str(r[0]): int(r[1]) for r in store.query("SELECT name, rack FROM dns_published")}


def record_applied(store: Store, changes: Iterable[tuple[str, str, tuple[int, tuple[str, ...]] | None, int]],
                   now: float) -> None:
    """`changes`: (name, rdtype, (ttl, values) or None for a deletion, owning
    rack), confirmed by the server."""
    with store.transaction(config=False):
        for name, rdtype, new, rack in changes:
            if new is None:
                store.execute("DELETE FROM dns_published WHERE name = ? AND rdtype = ?", (name, rdtype))
            else:
                store.execute(
                    "INSERT INTO dns_published (name, rdtype, ttl, vals, at, rack) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(name, rdtype) DO UPDATE SET ttl = excluded.ttl, vals = excluded.vals, "
                    "at = excluded.at, rack = excluded.rack",
                    (name, rdtype, new[0], json.dumps(list(new[1])), now, rack))
            store.execute("DELETE FROM dns_conflicts WHERE name = ?", (name,))


def record_conflicts(store: Store, conflicts: Iterable[tuple[str, str, str]], now: float) -> None:
    """`conflicts`: (name, rdtype, why) for names someone else holds."""
    rows = list(conflicts)
    if not rows:
        return
    with store.transaction(config=False):
        for name, rdtype, why in rows:
            store.execute("INSERT INTO dns_conflicts (name, rdtype, detail, at) VALUES (?, ?, ?, ?) "
                          "ON CONFLICT(name) DO UPDATE SET detail = excluded.detail, at = excluded.at",
                          (name, rdtype, why, now))


def conflicts(store: Store) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in store.query("SELECT name, detail FROM dns_conflicts ORDER BY name")]


def configure(store: Store, settings: dict[str, str]) -> None:
    with store.transaction():
        for k, value in settings.items():
            store.execute("INSERT INTO dns_state (key, value) VALUES (?, ?) "
                          "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (k, value))
        store.event("dns.configure", settings.get("server", ""))


def settings(store: Store) -> dict[str, str]:
    return {r[0]: r[1] for r in store.query("SELECT key, value FROM dns_state")}


def forget_if(store: Store, key_file_prefix: str) -> bool:
    """Drop the DNS settings if their key file lies under `key_file_prefix` (a lab
    being taken down). True if they were dropped."""
    with store.transaction():
        row = store.one("SELECT value FROM dns_state WHERE key = 'key_file'")
        if row is None or not str(row[0]).startswith(key_file_prefix):
            return False
        store.execute("DELETE FROM dns_state")
        return True
