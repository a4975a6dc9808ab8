"""Send record changes to a DNS server: RFC 2136 updates over TCP, TSIG-signed.

Each change carries a prerequisite, so a concurrent edit by someone else is
never overwritten:
  add     the name must not be in use (RFC 2136 2.4.4) — else someone else owns it
  change  the old record set must be there exactly (value-dependent) — else drift
  delete  the same
Changes go in batches (an update is atomic: all or nothing). A batch whose
prerequisites fail is split in halves until the failing changes stand alone;
those are conflicts, reported and left alone. A batch too big for one message is
split too. Nothing here touches the store: the caller records what was applied.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataset
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update

from ..errors import CtmError, InputError
from ..files import check_private
from .records import Change, RRset, Zones

BATCH = 1000  # changes per update message (split further if the message is too big)
PREREQ_FAILED = {dns.rcode.YXDOMAIN, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN, dns.rcode.NXRRSET}


class DnsError(CtmError):
    """The server could not be used; nothing of the failed batch was applied."""


class Unreachable(DnsError):
    pass


class AuthError(DnsError):
    pass


@dataclass(frozen=True)
class TsigKey:
    name: str
    algorithm: str
    secret: bytes = field(repr=False)  # never printed


_KEY = re.compile(r'key\s+"?([A-Za-z0-9._-]+)"?\s*\{\s*algorithm\s+([a-z0-9-]+)\s*;\s*secret\s+"([A-Za-z0-9+/=]+)"\s*;\s*\}\s*;')


def read_key(path: Path) -> TsigKey:
    """A key file as `tsig-keygen -a hmac-sha256 NAME` writes it."""
    check_private(path, "TSIG key", group_reads=True)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read the TSIG key: {exc.strerror}", where=str(path)) from None
    m = _KEY.search(text)
    if not m:
        raise InputError("not a TSIG key file (expected: key \"NAME\" { algorithm ...; secret \"...\"; };)",
                         where=str(path))
    try:
        secret = base64.b64decode(m.group(3), validate=True)
    except ValueError:
        raise InputError("the TSIG secret is not base64", where=str(path)) from None
    algorithm = _ALIASES.get(m.group(2), m.group(2))
    key = TsigKey(m.group(1), algorithm, secret)
    _exercise(key, path)
    return key


# BIND writes HMAC-MD5 by its short name; dnspython knows it by the long one.
_ALIASES = {"hmac-md5": "hmac-md5.sig-alg.reg.int"}


def _exercise(key: TsigKey, path: Path) -> None:
    """Sign and verify a test message with the key, as every later publish will: a key
    dnspython cannot use (an unknown algorithm) is refused now, in one line, not at
    every later edit with a traceback."""
    try:
        keyring = _keyring(key)
        query = dns.message.make_query("ctmanager-check.invalid.", "SOA")
        query.use_tsig(keyring, keyname=dns.name.from_text(key.name))
        dns.message.from_wire(query.to_wire(), keyring=keyring)
    except Exception as exc:  # noqa: BLE001  dnspython says KeyError, AttributeError, ...: all mean unusable
        raise InputError(f"TSIG key {key.name!r} cannot sign with algorithm {key.algorithm!r} "
                         f"({type(exc).__name__}); use hmac-sha256 (tsig-keygen -a hmac-sha256 NAME)",
                         where=str(path)) from None


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    key: TsigKey
    timeout: float = 5.0


@dataclass
class Published:
    applied: list[Change] = field(default_factory=list)
    conflicts: list[tuple[Change, str]] = field(default_factory=list)
    messages: int = 0


def publish(server: Server, zones: Zones, changes: Sequence[Change],
            on_applied: Callable[[list[Change]], None] | None = None) -> Published:
    """Apply `changes`; `on_applied` is called after each accepted message (so the
    caller can record progress: a later failure then loses nothing)."""
    out = Published()
    by_zone: dict[str, list[Change]] = {}
    for c in changes:
        by_zone.setdefault(zones.of(c.name), []).append(c)
    for zone, items in sorted(by_zone.items()):
        for i in range(0, len(items), BATCH):
            _send(server, zone, items[i:i + BATCH], out, on_applied)
    return out


def _send(server: Server, zone: str, batch: list[Change], out: Published,
          on_applied: Callable[[list[Change]], None] | None) -> None:
    msg = _message(server, zone, batch)
    try:
        rcode = _exchange(server, msg, out)
    except dns.exception.TooBig:
        rcode = None
    if rcode == dns.rcode.NOERROR:
        out.applied += batch
        if on_applied:
            on_applied(batch)
        return
    if len(batch) > 1 and (rcode is None or rcode in PREREQ_FAILED):
        half = len(batch) // 2
        _send(server, zone, batch[:half], out, on_applied)
        _send(server, zone, batch[half:], out, on_applied)
        return
    if rcode in PREREQ_FAILED:
        c = batch[0]
        if c.new is not None and current(server, c.name, c.rdtype) == c.new.values:
            out.applied.append(c)  # already there as wanted (another publisher, or a lost answer): adopt it
            if on_applied:
                on_applied([c])
        else:
            out.conflicts.append((c, _why(c, rcode)))
        return
    if rcode is None:
        raise DnsError(f"one change does not fit in a DNS message: {batch[0]}")
    if rcode in (dns.rcode.NOTAUTH, dns.rcode.REFUSED):
        raise AuthError(f"{server.host}:{server.port} refused the update for {zone} ({dns.rcode.to_text(rcode)}): "
                        f"check the TSIG key {server.key.name!r} and the zone's update-policy")
    raise DnsError(f"{server.host}:{server.port} answered {dns.rcode.to_text(rcode)} for an update of {zone}")


def _keyring(key: TsigKey) -> dict[dns.name.Name, dns.tsig.Key]:
    name = dns.name.from_text(key.name)
    return {name: dns.tsig.Key(name, key.secret, key.algorithm)}


def _message(server: Server, zone: str, batch: list[Change]) -> dns.update.UpdateMessage:
    u = dns.update.UpdateMessage(zone, keyring=_keyring(server.key), keyname=dns.name.from_text(server.key.name),
                                 keyalgorithm=server.key.algorithm)
    for c in batch:
        if c.old is None:
            u.absent(c.name)
        else:
            u.present(c.name, _rdataset(c.old))
        if c.new is None:
            u.delete(c.name, c.rdtype)
        else:
            u.replace(c.name, c.new.ttl, c.new.rdtype, *c.new.values)
    return u


def _rdataset(rr: RRset) -> dns.rdataset.Rdataset:
    """A value-dependent prerequisite: RFC 2136 wants TTL 0 there (else FORMERR)."""
    return dns.rdataset.from_text("IN", rr.rdtype, 0, *rr.values)


def _exchange(server: Server, msg: dns.message.Message, out: Published) -> dns.rcode.Rcode:
    try:
        response = dns.query.tcp(msg, server.host, port=server.port, timeout=server.timeout)
    except (dns.tsig.BadSignature, dns.tsig.BadTime, dns.tsig.PeerError) as exc:
        raise AuthError(f"{server.host}:{server.port}: TSIG failed ({type(exc).__name__}): "
                        f"the server does not know key {server.key.name!r} with this secret") from None
    except (TimeoutError, dns.exception.Timeout) as exc:
        raise Unreachable(f"{server.host}:{server.port}: no answer within {server.timeout:g}s") from exc
    except OSError as exc:
        raise Unreachable(f"{server.host}:{server.port}: {exc.strerror or exc}") from None
    out.messages += 1
    return response.rcode()


def current(server: Server, name: str, rdtype: str) -> tuple[str, ...]:
    """The record set the server holds now (TCP, no recursion)."""
    q = dns.message.make_query(name, rdtype)
    q.flags &= ~dns.flags.RD
    try:
        r = dns.query.tcp(q, server.host, port=server.port, timeout=server.timeout)
    except (dns.exception.DNSException, OSError):
        return ()
    want = dns.rdatatype.from_text(rdtype)
    return tuple(sorted(rr.to_text().lower() for rrset in r.answer if rrset.name == dns.name.from_text(name)
                        and rrset.rdtype == want for rr in rrset))


def _why(c: Change, rcode: dns.rcode.Rcode) -> str:
    if c.old is None:
        return f"{c.name} is already in use by records ctmanager did not create; left alone"
    return (f"{c.name} {c.rdtype} is not what ctmanager published ({' '.join(c.old.values)}): "
            f"someone changed it; left alone ({dns.rcode.to_text(rcode)})")


def axfr(server: Server, zone: str) -> dict[tuple[str, str], RRset]:
    """The zone's A and CNAME record sets, by zone transfer (TSIG-signed)."""
    import dns.zone

    try:
        xfr = dns.query.xfr(server.host, zone, port=server.port, timeout=server.timeout, keyring=_keyring(server.key),
                            keyname=server.key.name, keyalgorithm=server.key.algorithm, lifetime=60,
                            relativize=False)
        z = dns.zone.from_xfr(xfr, relativize=False)
    except (dns.tsig.BadSignature, dns.tsig.PeerError) as exc:
        raise AuthError(f"{server.host}:{server.port}: zone transfer of {zone} refused ({type(exc).__name__})") from None
    except dns.xfr.TransferError as exc:
        raise AuthError(f"{server.host}:{server.port}: zone transfer of {zone} refused ({exc})") from None
    except (TimeoutError, dns.exception.Timeout):
        raise Unreachable(f"{server.host}:{server.port}: no answer within {server.timeout:g}s") from None
    except OSError as exc:
        raise Unreachable(f"{server.host}:{server.port}: {exc.strerror or exc}") from None
    out: dict[tuple[str, str], RRset] = {}
    for name, rdataset in z.iterate_rdatasets():
        rdtype = dns.rdatatype.to_text(rdataset.rdtype)
        if rdtype in ("A", "CNAME"):
            n = name.to_text().lower()
            out[n, rdtype] = RRset(n, rdtype, tuple(sorted(r.to_text().lower() for r in rdataset)), rdataset.ttl)
    return out
