"""State reports: what an agent says about its HN, one signed UDP datagram.

    datagram = HMAC-SHA256(rack key, body) (32 bytes) || body
    body     = JSON {v, rack, hn, boot_id, seq, sent_at, drained, metrics{...}, cts[{ctid, opst, since, spec}],
                     fenced, hears{voter: seconds since heard}}

`fenced` and `hears` (for quorum, see ctmanager/fencing) are optional on the wire;
the manager's heartbeats are reports too, from the voter `manager`, with no CTs.
A CT's `spec` (the hash of the spec its config was written from, wire.spec.spec_hash)
is optional too: left out when unknown (an older agent), so such a report costs
nothing extra, and the manager then never acts on drift.

The receiver checks, cheapest first: size, MAC, JSON, schema, rack, freshness.
A report is fresh if it is newer than the last one accepted from that HN: a
higher `seq` for the same `boot_id`, or (after a reboot) a new `boot_id` with a
later `sent_at`, so an old datagram replayed from an earlier boot is dropped too.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from .. import __version__ as SOFTWARE
from ..validate import is_label
from . import keys
from .keys import Keyring

log = logging.getLogger(__name__)

VERSION = 1
MAC_SIZE = 32
MAX_DATAGRAM = 60_000  # UDP payload we accept; 100 CTs take about 7.5 KB with their spec hashes
MAX_CTS = 1000
MAX_VOTERS = 256
WINDOW = 10.0  # s a report's sent_at may be from our clock, either way (clock skew + delay; the replay window)
MAX_SEQ = 2**53  # JSON integers beyond this are not exact everywhere
SEQ_JUMP, SEQ_RATE = 1000, 100.0  # a seq may run ahead by this plus this per second of sent_at
LOG_EVERY = 60.0  # s: at most LOG_BURST lines per drop reason in this long, from all sources together
LOG_BURST = 5
MAX_LOGGED = 256  # sources remembered for log rate-limiting
OPST = ("UP", "DOWN")  # a CT the HN does not list is not there on that HN
METRICS = ("cpu_load", "mem_total", "mem_free", "disk_total", "disk_free", "ct_count")
_BOOT = re.compile(r"[0-9a-f-]{8,64}")
HEX = "0123456789abcdef"  # a CT's spec hash: 0-64 of these (wire.spec.HASH_LEN today; "" = unknown)


class ReportError(ValueError):
    """Why a datagram was dropped: `reason` is the counter it goes to."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


NOBODY: Mapping[str, float] = MappingProxyType({})


class CtState(NamedTuple):
    """A NamedTuple, not a frozen dataclass: a report carries up to 1,000 and
    building frozen dataclasses was half the cost of taking a report in."""

    ctid: int
    opst: str  # UP | DOWN (a CT the HN does not report is not there)
    since: float
    spec: str = ""  # hash of the spec the HN's config of this CT was written from; "" = unknown


class Metrics(NamedTuple):
    cpu_load: float  # 1-minute load average / CPUs
    mem_total: int  # bytes
    mem_free: int
    disk_total: int
    disk_free: int
    ct_count: int


class Report(NamedTuple):
    """Immutable; a NamedTuple like CtState: an agent builds one a second and a
    manager takes in one per HN a second (a frozen dataclass costs ~4x to build)."""

    rack: int
    hn: str
    boot_id: str
    seq: int
    sent_at: float
    drained: bool
    metrics: Metrics
    cts: tuple[CtState, ...]
    fenced: bool = False  # the agent lost quorum and stopped its CTs; it admits none
    hears: Mapping[str, float] = NOBODY  # voter -> seconds since the sender heard it
    # A manager's heartbeat: the lease epoch it leads with. An agent's report: the newest
    # epoch it has seen with no action of an older one still running there (0: none).
    epoch: int = 0
    # the sender's software version (`hn list` shows it during a rolling upgrade); a report
    # parsed from an older sender has '' (receivers ignore keys they do not know)
    sw: str = SOFTWARE

    def body(self) -> bytes:
        extra: dict[str, Any] = {"epoch": self.epoch} if self.epoch else {}
        if self.sw:
            extra["sw"] = self.sw
        return json.dumps({
            "v": VERSION, "rack": self.rack, "hn": self.hn, "boot_id": self.boot_id, "seq": self.seq,
            "sent_at": self.sent_at, "drained": self.drained, "metrics": self.metrics._asdict(),
            "cts": [{"ctid": c.ctid, "opst": c.opst, "since": c.since, "spec": c.spec} if c.spec else
                    {"ctid": c.ctid, "opst": c.opst, "since": c.since} for c in self.cts],
            "fenced": self.fenced, "hears": dict(self.hears), **extra,
        }, separators=(",", ":")).encode()


def sign(report: Report, key: bytes | Keyring) -> bytes:
    if isinstance(key, Keyring):
        key.refresh()  # a switch on this machine takes effect within a second
        key = key.current
    body = report.body()
    datagram = hmac.new(key, body, hashlib.sha256).digest() + body
    if len(datagram) > MAX_DATAGRAM and any(c.spec for c in report.cts):
        # Spec hashes cost ~26 bytes a CT: about 750 CTs fit with them, 1,000 without.
        # An HN that crowded still reports, without them (drift is not seen there).
        global _unhashed_logged
        if not _unhashed_logged:
            _unhashed_logged = True
            log.warning("%s: %d CTs: reports leave out the spec hashes to fit in %d bytes; "
                        "configuration drift on this HN is not detected", report.hn, len(report.cts), MAX_DATAGRAM)
        return sign(report._replace(cts=tuple(c._replace(spec="") for c in report.cts)), key)
    if len(datagram) > MAX_DATAGRAM:
        raise ReportError("oversize", f"{len(datagram)} bytes for {len(report.cts)} CTs")
    return datagram


_unhashed_logged = False


def verify(datagram: bytes, key: bytes | Keyring, rack: int, known: KnownCts | None = None) -> Report:
    """The report in a datagram, or ReportError. Never trusts a byte before the MAC.
    `key`: one key, or a rack's keyring (any of its keys: a rotation, wire/keys.py).
    `known`: see parse_body."""
    if len(datagram) > MAX_DATAGRAM:
        raise ReportError("oversize", f"{len(datagram)} bytes")
    if len(datagram) <= MAC_SIZE:
        raise ReportError("malformed", "too short")
    mac, body = datagram[:MAC_SIZE], datagram[MAC_SIZE:]
    if not _signed(mac, body, key):
        raise ReportError("forged", "bad MAC")
    report = parse_body(body, known)
    if report.rack != rack:
        raise ReportError("wrong_rack", f"rack {report.rack}, not {rack}")
    return report


def _signed(mac: bytes, body: bytes, key: bytes | Keyring) -> bool:
    if isinstance(key, bytes):
        return hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest())
    if any(hmac.compare_digest(mac, hmac.new(k, body, hashlib.sha256).digest()) for k in key.verifiers()):
        return True
    # a key staged or switched on this machine since the last look: look again (at most once a second)
    return key.refresh() and any(hmac.compare_digest(mac, hmac.new(k, body, hashlib.sha256).digest())
                                 for k in key.verifiers())


KnownCts = dict[str, tuple[list[Any], tuple["CtState", ...]]]  # HN -> (its last CT list as parsed, as checked)
MAX_KNOWN = 4096  # HNs remembered by a receiver (only ones whose MAC was good)


def parse_body(body: bytes | str, known: KnownCts | None = None) -> Report:
    """An unsigned report body (from the store, or `ctagent observe` over SSH,
    which is authenticated already). `known`: a receiver's memory of each HN's
    last CT list: an HN reports the same list second after second, and a list
    equal to one checked already is not checked and built again."""
    try:
        return _parse(json.loads(body), known)
    except RecursionError:  # 20,000 '[' behind a good MAC: no report nests more than 3 deep
        raise ReportError("malformed", "nested too deeply") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ReportError("malformed", str(exc)[:200] or type(exc).__name__) from None


def _parse(d: dict[str, Any], known: KnownCts | None = None) -> Report:
    if d["v"] != VERSION:
        raise ValueError(f"version {d['v']!r}")
    hn, boot_id = d["hn"], d["boot_id"]
    if not isinstance(hn, str) or not is_label(hn):
        raise ValueError("hn is not a host name")
    if not isinstance(boot_id, str) or not _BOOT.fullmatch(boot_id):
        raise ValueError("bad boot_id")
    m = d["metrics"]
    metrics = Metrics(_num(m["cpu_load"]), *(_count(m[k]) for k in METRICS[1:]))
    cts = d["cts"]
    if not isinstance(cts, list) or len(cts) > MAX_CTS:
        raise ValueError("cts must be a list of at most 1000")
    last = None if known is None else known.get(hn)
    if last is not None and last[0] == cts:  # one comparison in C; the usual case
        states = last[1]
    else:
        states = _cts(cts) if cts else ()
        if known is not None:
            if len(known) >= MAX_KNOWN:
                known.clear()
            known[hn] = (cts, states)
    if type(d["drained"]) is not bool:
        raise ValueError("drained must be true or false")
    fenced = d.get("fenced", False)
    if type(fenced) is not bool:
        raise ValueError("fenced must be true or false")
    hears = d.get("hears", {})
    if not isinstance(hears, dict) or len(hears) > MAX_VOTERS:
        raise ValueError(f"hears must be an object of at most {MAX_VOTERS} voters")
    for voter, age in hears.items():
        if not is_label(voter):
            raise ValueError("hears: a voter is not a host name")
        _num(age)
    seq = _count(d["seq"])
    if seq >= MAX_SEQ:
        raise ValueError(f"seq is {seq}, beyond 2**53")
    epoch = _count(d.get("epoch", 0))
    if epoch >= MAX_SEQ:
        raise ValueError(f"epoch is {epoch}, beyond 2**53")
    sw = d.get("sw", "")
    if not isinstance(sw, str) or not _SW.fullmatch(sw):  # shown, never acted on: a future sender's odd
        sw = "?"  # version must not make its report (and its HN's votes) vanish
    return Report(_count(d["rack"]), hn, boot_id, seq, _num(d["sent_at"]), d["drained"], metrics,
                  tuple(states), fenced, {v: float(a) for v, a in hears.items()}, epoch, sw)


_SW = re.compile(r"[0-9A-Za-z.+~:-]{0,64}")  # a version, as pip or Debian write one ('' from older senders)
_CT_FIELDS = operator.itemgetter("ctid", "opst", "since")
_OPST = frozenset(OPST)
_INT, _NUM, _FLOAT = {int}, {int, float}, {float}


_new_state = functools.partial(tuple.__new__, CtState)


def _cts(cts: list[Any]) -> tuple[CtState, ...]:
    """The CT entries of a report, checked column by column: up to 1,000 of them
    arrive per report and HN every second, so no Python loop runs per entry (this
    is most of the cost of taking a report in)."""
    ctids, opsts, sinces = zip(*map(_CT_FIELDS, cts))  # not an object, or a field missing: TypeError/KeyError
    if set(map(type, ctids)) != _INT or min(ctids) <= 0 or max(ctids) >= 2**31 or not _OPST.issuperset(opsts):
        raise ValueError("bad CT entry")
    kinds = set(map(type, sinces))  # bool is not int here: type() is exact
    if not kinds <= _NUM or min(sinces) < 0 or max(sinces) >= 1e12:
        raise ValueError("bad CT since")
    if len(set(ctids)) != len(ctids):
        raise ValueError("a CTID appears twice")
    specs = list(map(dict.get, cts, repeat("spec"), repeat("")))
    joined = "".join(specs)  # one that is not a string: TypeError
    if joined and (joined.strip(HEX) or max(map(len, specs)) > 64):  # strip: faster than a regular expression
        raise ValueError("bad CT spec hash")
    # tuple.__new__ through partial: the NamedTuples are built without a Python call each
    return tuple(map(_new_state, zip(ctids, opsts, sinces if kinds == _FLOAT else map(float, sinces), specs)))


def _count(x: Any) -> int:
    if type(x) is not int or x < 0:
        raise ValueError("expected a non-negative integer")
    return x


def _num(x: Any) -> float:
    if type(x) not in (int, float) or not 0 <= x < 1e12:
        raise ValueError("expected a non-negative number")
    return float(x)


@dataclass
class Receiver:
    """Verifies datagrams and keeps the newest report of each HN.

    Fresh: sent within `window` s of our clock (either way), and after the last
    report accepted from that HN (a higher seq in the same boot, not absurdly
    higher; or a new boot sent later). A manager seeds `latest` from the store,
    so a restart does not reopen the window to older captures.

    `drops` counts every dropped datagram by reason. The log gets at most one line
    per source and reason a minute and LOG_BURST per reason from all sources
    together (then one line saying how many were not logged): a flood from
    100,000 addresses writes a few lines, and remembers MAX_LOGGED sources.
    """

    key: bytes | Keyring = field(repr=False)
    rack: int
    window: float = WINDOW
    latest: dict[str, Report] = field(default_factory=dict)
    received_at: dict[str, float] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    accepted: int = 0
    quiet: bool = False  # count drops without logging them (the simulator duplicates on purpose)
    _logged: dict[tuple[str, str], float] = field(default_factory=dict, repr=False)
    _budget: dict[str, list[float]] = field(default_factory=dict, repr=False)  # reason -> [since, lines, unlogged]
    _known: KnownCts = field(default_factory=dict, repr=False)

    def receive(self, datagram: bytes, source: str, now: float) -> Report | None:
        try:
            report = verify(datagram, self.key, self.rack, self._known)
        except ReportError as exc:
            self._drop(exc, source, now)
            return None
        return self.accept(report, source, now)

    def accept(self, report: Report, source: str, now: float) -> Report | None:
        """A verified report, if it is fresh (the simulator, which sends no bytes, starts here)."""
        hn = report.hn
        last = self.latest.get(hn)
        # The usual case first (the next seq of the same boot, on time); anything else
        # goes through _check_fresh, which says why it is dropped.
        if last is None or report.boot_id != last.boot_id or not (
                -self.window <= report.sent_at - now <= self.window and last.seq < report.seq <= last.seq + SEQ_JUMP):
            try:
                self._check_fresh(report, now)
            except ReportError as exc:
                self._drop(exc, source, now)
                return None
        self.latest[hn] = report
        self.received_at[hn] = now
        self.accepted += 1
        return report

    def _drop(self, exc: ReportError, source: str, now: float) -> None:
        reason = exc.reason
        self.drops[reason] = self.drops.get(reason, 0) + 1
        if self.quiet:
            return
        budget = self._budget.setdefault(reason, [now, 0, 0])
        if now - budget[0] >= LOG_EVERY:
            if budget[2]:
                log.warning("%d more dropped report(s) (%s) were not logged", budget[2], reason)
            budget[:] = [now, 0, 0]
        if now - self._logged.get((source, reason), -1e18) < LOG_EVERY or budget[1] >= LOG_BURST:
            budget[2] += 1
            return
        budget[1] += 1
        if len(self._logged) >= MAX_LOGGED:
            del self._logged[next(iter(self._logged))]  # the oldest
        self._logged[(source, reason)] = now
        log.warning("dropped report from %s: %s (%d %s so far)", source, _printable(str(exc)), self.drops[reason],
                    reason)

    def _check_fresh(self, report: Report, now: float) -> None:
        if abs(report.sent_at - now) > self.window:
            raise ReportError("stale", f"{report.hn}: sent_at is {report.sent_at - now:+.1f} s from now (a replay, "
                                       f"or clocks more than {self.window:g} s apart?)")
        last = self.latest.get(report.hn)
        if last is None:
            return
        if report.boot_id == last.boot_id:
            if report.seq <= last.seq:
                raise ReportError("stale", f"{report.hn}: seq {report.seq} after {last.seq}")
            if report.seq - last.seq > SEQ_JUMP + SEQ_RATE * max(report.sent_at - last.sent_at, 0.0):
                raise ReportError("seq_jump", f"{report.hn}: seq {report.seq} after {last.seq}, "
                                              f"{report.sent_at - last.sent_at:.1f} s later")
        elif report.sent_at <= last.sent_at:
            raise ReportError("stale", f"{report.hn}: boot {report.boot_id} is older than boot {last.boot_id}")


def _printable(text: str) -> str:
    """One log line, whatever a datagram held (parse errors quote parts of it)."""
    return text.encode("unicode_escape").decode("ascii")[:300]


def read_key(path: Path, file: str) -> bytes:
    """The rack key in `path` (wire/keys.py: a daemon holds a Keyring)."""
    return keys.read_key(path, f"{file}: key_file")
