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

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..store import Store, queries
from ..store import dns as dnsrows
from ..validate import hostport
from . import publisher, records
from .records import Change, RRset

STATE_KEYS = ("server", "key_file")


def publishing(store: Store, wait: float | None = None) -> contextlib.AbstractContextManager[bool]:
    """The publisher's lock: the pending changes are worked out and sent by one
    process at a time, so a change is never sent twice (the second send would fail
    its prerequisite and look like a conflict)."""
    return store.lock(dnsrows.LOCK, wait)


@dataclass
class SyncReport:
    applied: list[Change] = field(default_factory=list)
    conflicts: list[tuple[Change, str]] = field(default_factory=list)
    pending: list[Change] = field(default_factory=list)  # not sent (server down, or dry run)
    error: str = ""
    messages: int = 0
    drift: list[str] = field(default_factory=list)  # verify: owned records the zone does not hold as published
    collisions: list[str] = field(default_factory=list)  # names two record sets claim (left out; records.desired)


def desired(store: Store, owners: dict[str, int] | None = None,
            collisions: list[str] | None = None) -> dict[tuple[str, str], RRset]:
    dc = queries.dc_template(store)
    return records.desired(dc, queries.cts(store), queries.nodes(store), queries.routes(store),
                           queries.pools(store, dc), owners, collisions)


def pending(store: Store, only: set[str] | None = None, rack: int | None = None,
            collisions: list[str] | None = None) -> tuple[list[Change], dict[str, int]]:
    """What the store implies and the server was not sent yet (only the names in
    `only`; only those rack `rack` publishes), and the rack owning each name.
    A name's rack is the one it belongs to now; a deletion's, the rack that
    published it (0 for records from before racks were recorded: anyone's).
    A name two record sets claim (a store from before names were reserved) goes
    to `collisions`, its first claim kept: the rest of the DC still publishes."""
    wanted: dict[str, int] = {}
    changes = records.diff(desired(store, wanted, [] if collisions is None else collisions), published(store))
    had = dnsrows.owners(store)
    owner = {c.name: wanted[c.name] if c.new is not None else had.get(c.name, 0) for c in changes}
    keep = [c for c in changes if (only is None or c.name in only) and (rack is None or owner[c.name] in (rack, 0))]
    return keep, {c.name: owner[c.name] for c in keep}


def unpublished(store: Store, names: set[str]) -> list[str]:
    """Which of `names` have records the server was not sent yet (none if no DNS
    server is configured: nothing is ever published then)."""
    if "server" not in dnsrows.settings(store):
        return []
    return sorted({c.name for c in pending(store, only=names)[0]})


def published(store: Store) -> dict[tuple[str, str], RRset]:
    return {(name, rdtype): RRset(name, rdtype, vals, ttl) for name, rdtype, ttl, vals in dnsrows.published(store)}


def record_applied(store: Store, changes: list[Change], owner: dict[str, int], now: float) -> None:
    dnsrows.record_applied(store, [(c.name, c.rdtype, None if c.new is None else (c.new.ttl, c.new.values),
                                    owner.get(c.name, 0)) for c in changes], now)


def record_conflicts(store: Store, conflicts: list[tuple[Change, str]], now: float) -> None:
    dnsrows.record_conflicts(store, [(c.name, c.rdtype, why) for c, why in conflicts], now)


def configure(store: Store, server: str, key_file: str) -> None:
    hostport(server, "--server")
    publisher.read_key(Path(key_file))  # refuse a bad key file now, not at the first publish
    dnsrows.configure(store, {"server": server, "key_file": str(Path(key_file).resolve())})


def server_of(store: Store, timeout: float = 5.0) -> publisher.Server | None:
    """The configured DNS server, or None if `dns configure` was never run."""
    state = dnsrows.settings(store)
    if "server" not in state:
        return None
    host, port = hostport(state["server"], "dns server in the store")
    return publisher.Server(host, int(port), publisher.read_key(Path(state["key_file"])), timeout)


def sync(store: Store, server: publisher.Server | None, *, dry_run: bool = False,
         only: set[str] | None = None, rack: int | None = None) -> SyncReport:
    """Publish what is pending: all of it (the CLI: the whole DC), only the names
    in `only`, or only what rack `rack` publishes (its manager's DNS worker)."""
    if dry_run or server is None:
        return _sync(store, server, dry_run=dry_run, only=only, rack=rack)
    with publishing(store):
        return _sync(store, server, dry_run=dry_run, only=only, rack=rack)


def _sync(store: Store, server: publisher.Server | None, *, dry_run: bool, only: set[str] | None,
          rack: int | None) -> SyncReport:
    dc = queries.dc_template(store)
    report = SyncReport()
    changes, owner = pending(store, only, rack, report.collisions)
    if dry_run or server is None or not changes:
        report.pending = changes
        if server is None and changes:
            report.error = "no DNS server configured (ctmanager dns configure --server IP:PORT --key-file FILE)"
        return report
    try:
        out = publisher.publish(server, records.zones(dc), changes,
                                on_applied=lambda done: record_applied(store, done, owner, time.time()))
    except publisher.DnsError as exc:
        # messages accepted before the failure are recorded already (on_applied)
        report.error = str(exc)
        report.pending = pending(store, only, rack)[0]
        return report
    report.applied, report.conflicts, report.messages = out.applied, out.conflicts, out.messages
    record_conflicts(store, out.conflicts, time.time())
    conflicted = {c.name for c, _ in out.conflicts}
    report.pending = [c for c in pending(store, only, rack)[0] if c.name not in conflicted]
    return report


def verify(store: Store, server: publisher.Server, *, repair: bool = True, rack: int | None = None) -> SyncReport:
    """Read the zones (AXFR) and compare with what we published (all of it, or
    what rack `rack` publishes): records of ours that drifted are put back (with
    the zone's actual state as the prerequisite); names of ours someone took over
    are reported, not touched."""
    with publishing(store):
        return _verify(store, server, repair=repair, rack=rack)


def _verify(store: Store, server: publisher.Server, *, repair: bool, rack: int | None) -> SyncReport:
    dc = queries.dc_template(store)
    z = records.zones(dc)
    zone_has: dict[tuple[str, str], RRset] = {}
    for zone in (z.infra, z.tenant):
        zone_has.update(publisher.axfr(server, zone))
    mine = published(store)
    if rack is not None:
        had = dnsrows.owners(store)
        mine = {k: rr for k, rr in mine.items() if had.get(k[0], 0) in (rack, 0)}
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
