"""Between the store and the DNS server: what is wanted, what was published,
what is pending, and the sync and verify passes.

The store is the queue: what it implies (records.desired) minus what the server
confirmed (`dns_published`) is pending. A CLI edit publishes its changes at once;
when the server is down they stay pending, the CLI says so, and the next sync
(the manager daemon retries with backoff, or `ctmanager dns sync`) sends them.
Nothing is lost, and nothing is sent twice: a change is recorded as published in
the same transaction as the server's acceptance is noted, message by message.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import queries
from ..errors import InputError
from ..inventory import Inventory
from ..store import Store
from . import publisher, records
from .records import Change, RRset

STATE_KEYS = ("server", "key_file")


@dataclass
class SyncReport:
    applied: list[Change] = field(default_factory=list)
    conflicts: list[tuple[Change, str]] = field(default_factory=list)
    pending: list[Change] = field(default_factory=list)  # not sent (server down, or dry run)
    error: str = ""
    messages: int = 0
    drift: list[str] = field(default_factory=list)  # verify: owned records the zone does not hold as published


def desired(store: Store) -> dict[tuple[str, str], RRset]:
    dc = queries.dc_template(store)
    return records.desired(dc, queries.cts(store), queries.nodes(store), queries.routes(store),
                           Inventory(store, dc).pools())


def published(store: Store) -> dict[tuple[str, str], RRset]:
    return {(r[0], r[1]): RRset(r[0], r[1], tuple(json.loads(r[3])), r[2])
            for r in store.query("SELECT name, rdtype, ttl, vals FROM dns_published")}


def record_applied(store: Store, changes: list[Change], now: float) -> None:
    with store.transaction():
        for c in changes:
            if c.new is None:
                store.db.execute("DELETE FROM dns_published WHERE name = ? AND rdtype = ?", (c.name, c.rdtype))
            else:
                store.db.execute(
                    "INSERT INTO dns_published (name, rdtype, ttl, vals, at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT(name, rdtype) DO UPDATE SET ttl = excluded.ttl, vals = excluded.vals, at = excluded.at",
                    (c.name, c.rdtype, c.new.ttl, json.dumps(list(c.new.values)), now))
            store.db.execute("DELETE FROM dns_conflicts WHERE name = ?", (c.name,))


def record_conflicts(store: Store, conflicts: list[tuple[Change, str]], now: float) -> None:
    with store.transaction():
        for c, why in conflicts:
            store.db.execute("INSERT INTO dns_conflicts (name, rdtype, detail, at) VALUES (?, ?, ?, ?) "
                             "ON CONFLICT(name) DO UPDATE SET detail = excluded.detail, at = excluded.at",
                             (c.name, c.rdtype, why, now))


def configure(store: Store, server: str, key_file: str) -> None:
    from ..agent.config import hostport

    hostport(server, "--server")
    publisher.read_key(Path(key_file))  # refuse a bad key file now, not at the first publish
    with store.transaction():
        for k, value in (("server", server), ("key_file", str(Path(key_file).resolve()))):
            store.db.execute("INSERT INTO dns_state (key, value) VALUES (?, ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (k, value))
        store.event("dns.configure", server)


def server_of(store: Store, timeout: float = 5.0) -> publisher.Server | None:
    """The configured DNS server, or None if `dns configure` was never run."""
    state = {r[0]: r[1] for r in store.query("SELECT key, value FROM dns_state")}
    if "server" not in state:
        return None
    host, _, port = state["server"].rpartition(":")
    return publisher.Server(host, int(port), publisher.read_key(Path(state["key_file"])), timeout)


def sync(store: Store, server: publisher.Server | None, *, dry_run: bool = False,
         only: set[str] | None = None) -> SyncReport:
    """Publish what is pending (all of it, or only the names in `only`)."""
    dc = queries.dc_template(store)
    changes = records.diff(desired(store), published(store))
    if only is not None:
        changes = [c for c in changes if c.name in only]
    report = SyncReport()
    if dry_run or server is None or not changes:
        report.pending = changes
        if server is None and changes:
            report.error = "no DNS server configured (ctmanager dns configure --server IP:PORT --key-file FILE)"
        return report
    try:
        out = publisher.publish(server, records.zones(dc), changes,
                                on_applied=lambda done: record_applied(store, done, time.time()))
    except publisher.DnsError as exc:
        # messages accepted before the failure are recorded already (on_applied)
        report.error = str(exc)
        report.pending = [c for c in records.diff(desired(store), published(store)) if only is None or c.name in only]
        return report
    report.applied, report.conflicts, report.messages = out.applied, out.conflicts, out.messages
    record_conflicts(store, out.conflicts, time.time())
    conflicted = {c.name for c, _ in out.conflicts}
    report.pending = [c for c in records.diff(desired(store), published(store))
                      if (only is None or c.name in only) and c.name not in conflicted]
    return report


def verify(store: Store, server: publisher.Server, *, repair: bool = True) -> SyncReport:
    """Read the zones (AXFR) and compare with what we published: records of ours
    that drifted are put back (with the zone's actual state as the prerequisite);
    names of ours someone took over are reported, not touched."""
    dc = queries.dc_template(store)
    z = records.zones(dc)
    zone_has: dict[tuple[str, str], RRset] = {}
    for zone in (z.infra, z.tenant):
        zone_has.update(publisher.axfr(server, zone))
    mine = published(store)
    fixes: list[Change] = []
    report = SyncReport()
    for key, rr in sorted(mine.items()):
        actual = zone_has.get(key)
        if actual == rr:
            continue
        report.drift.append(f"{rr.name} {rr.rdtype}: published {' '.join(rr.values)}, zone has "
                            f"{' '.join(actual.values) if actual else 'nothing'}")
        fixes.append(Change(rr.name, rr.rdtype, actual, rr))
    if repair and fixes:
        out = publisher.publish(server, z, fixes)
        report.applied, report.conflicts, report.messages = out.applied, out.conflicts, out.messages
        record_conflicts(store, out.conflicts, time.time())
    else:
        report.pending = fixes
    return report


def require_server(store: Store) -> publisher.Server:
    server = server_of(store)
    if server is None:
        raise InputError("no DNS server configured: ctmanager dns configure --server IP:PORT --key-file FILE")
    return server
