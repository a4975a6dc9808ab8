"""Boundary validators: every value that can reach a rendered config, zone or shell
command passes through one of these first. Each returns the normalised value or
raises InputError naming the field.

The allowed alphabets are deliberately small: no quotes, whitespace, `;`, `$` or
newlines can pass, so rendered `KEY="value"` lines and shell scripts stay intact.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Callable

from .errors import InputError

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_PATH = re.compile(r"/(?:[A-Za-z0-9._+-]+/)*[A-Za-z0-9._+-]*\Z")  # no nested "+/?)*": that backtracks exponentially
_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}\Z")
_SERIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_SIZE = re.compile(r"([0-9]{1,15}(?:\.[0-9]{1,15})?)\s*([KMGT]?)B?\Z", re.IGNORECASE)
MAX_SIZE = 1 << 60  # bytes (1 EiB): any size beyond is a typo, and would not fit the store's integers
_IFNAME = re.compile(r"[a-zA-Z][a-zA-Z0-9_.-]{0,14}\Z")

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _fail(field: str, value: object, why: str) -> InputError:
    return InputError(f"{why} (got {value!r})", where=field)


MAX_CTID = 2147483644  # the largest CTID vzctl accepts (LXC takes any name); the allocator stops below


def is_digits(value: str) -> bool:
    """ASCII digits only: str.isdigit() is true of '²' (int() then fails) and of
    other scripts' digits (int() then accepts them). The one digit test everywhere."""
    return value.isascii() and value.isdigit()


def is_label(value: str) -> bool:
    """The DNS-label rule, for code that builds its own message (one rule everywhere)."""
    return _LABEL.match(value) is not None


def label(value: object, field: str) -> str:
    """One DNS label: lower-case letters, digits, inner hyphens, 1–63 chars."""
    if not isinstance(value, str):
        raise _fail(field, value, "must be a string")
    if not _LABEL.match(value):
        if value != value.lower():
            why = "must be lower case (a DNS label)"
        elif len(value) > 63:
            why = "is longer than 63 characters (a DNS label)"
        else:
            why = "is not a DNS label: use a-z, 0-9 and inner '-'"
        raise _fail(field, value, why)
    return value


def hostname(value: object, field: str) -> str:
    """A CT's hostname: a DNS label that is not all digits (a CLI reference that is
    all digits means a CTID, so such a name would name another CT)."""
    name = label(value, field)
    if is_digits(name):
        raise _fail(field, value, "may not be all digits (it would read as a CTID)")
    return name


def zone(value: object, field: str) -> str:
    """A DNS zone name: dotted labels, no trailing dot, at most 253 chars."""
    if not isinstance(value, str) or not value:
        raise _fail(field, value, "must be a non-empty DNS name")
    if len(value) > 253:
        raise _fail(field, value, "is longer than 253 characters")
    parts = value.split(".")
    if len(parts) < 2:
        raise _fail(field, value, "must have at least two labels")
    for part in parts:
        label(part, field)
    return value


MAX_NAME = 253  # characters of a DNS name, without its trailing dot (RFC 1035: 255 octets on the wire)


def dns_name(value: object, field: str) -> str:
    """A DNS name (dotted labels; a trailing dot is dropped), lower case: each label
    a DNS label, the whole at most 253 characters. The message says which limit a
    name breaks (a long name of short labels is not a label's fault)."""
    if not isinstance(value, str) or not value.rstrip("."):
        raise _fail(field, value, "must be a non-empty DNS name")
    name = value.rstrip(".")
    bad = next((part for part in name.split(".") if not _LABEL.match(part)), None)
    if bad is not None:
        why = "is longer than 63 characters" if len(bad) > 63 else "is not a DNS label (a-z, 0-9 and inner '-')"
        raise _fail(field, value[:300], f"has a label {bad[:80]!r} that {why}")
    if len(name) > MAX_NAME:
        raise _fail(field, value[:300], f"is {len(name)} characters long; a DNS name has at most {MAX_NAME}")
    return name


def zones_overlap(a: str, b: str) -> bool:
    """Two zones are one, or one lies inside the other: a DNS server cannot serve
    both as separate zones (the same zone twice, or names claimed by two)."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b or a.endswith("." + b) or b.endswith("." + a)


# A rack slot: slot N is the N-th /16 of the supernet, and rack N's rows, specs and
# reports carry N. 0 is no rack (a DNS record set from before racks were recorded
# is rack 0's: anyone's), and more than 255 would not fit a /8. The one rule for the
# template, the store's rows, CT specs and ctagent's config.
SLOT_MIN, SLOT_MAX = 1, 255
# A node's position in its rack: position P has the P-th address of the template's
# nodes range, inside the rack's /16 (the manifest allows at most that range's size).
POSITION_MAX = 65534


def slot(value: object, field: str) -> int:
    return integer(value, field, minimum=SLOT_MIN, maximum=SLOT_MAX)


def position(value: object, field: str, *, maximum: int = POSITION_MAX) -> int:
    return integer(value, field, minimum=1, maximum=min(maximum, POSITION_MAX))


def path(value: object, field: str) -> str:
    """An absolute path with a safe alphabet and no `..` component: the one rule
    for every path that lands in a config (named.conf, carbon.conf, nginx.conf,
    mount scripts) or a shell command: no quote, space, `;`, `{` or newline."""
    if not isinstance(value, str) or len(value) > 1024 or not _PATH.match(value):
        raise _fail(field, value[:200] if isinstance(value, str) else value,
                    "must be an absolute path of [A-Za-z0-9._+-/]")
    if ".." in value.split("/"):
        raise _fail(field, value, "must not contain '..'")
    return value.rstrip("/") or "/"


def relpath(value: object, field: str) -> str:
    """A relative path (inside a template folder) with the same safe alphabet."""
    if not isinstance(value, str) or value.startswith("/"):
        raise _fail(field, value, "must be a relative path")
    path("/" + value, field)
    return value


def mac(value: object, field: str) -> str:
    """A NIC's own (unicast) address: DHCP and the switches key on it."""
    if not isinstance(value, str) or not _MAC.match(value.lower()):
        raise _fail(field, value, "is not a MAC address like 52:54:00:12:34:56")
    if int(value[:2], 16) & 1:
        raise _fail(field, value, "is a multicast or broadcast address, not a NIC's")
    if value.lower() == "00:00:00:00:00:00":
        raise _fail(field, value, "is all zeros, not a NIC's address")
    return value.lower()


def serial(value: object, field: str) -> str:
    if not isinstance(value, str) or not _SERIAL.match(value):
        raise _fail(field, value, "is not a serial number ([A-Za-z0-9._-], 1–64 chars)")
    return value


def ifname(value: object, field: str) -> str:
    if not isinstance(value, str) or not _IFNAME.match(value):
        raise _fail(field, value, "is not a network interface name (1–15 chars)")
    return value


def ipv4(value: object, field: str) -> ipaddress.IPv4Address:
    try:
        if not isinstance(value, str):
            raise ValueError
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise _fail(field, value, "is not an IPv4 address") from None


def ipv4_network(value: object, field: str) -> ipaddress.IPv4Network:
    try:
        if not isinstance(value, str):
            raise ValueError
        return ipaddress.IPv4Network(value)
    except ValueError:
        raise _fail(field, value, "is not an IPv4 network like 10.0.0.0/8 (host bits must be zero)") from None


def size(value: object, field: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """A byte size: an integer of bytes or a string like `512M`, `2G`, `1.5T`."""
    if isinstance(value, bool):
        raise _fail(field, value, "must be a size like 512M or 2G")
    if isinstance(value, int):
        nbytes = value
    elif isinstance(value, str) and (m := _SIZE.match(value.strip())):
        nbytes = int(float(m.group(1)) * UNITS[m.group(2).upper()])
    else:
        raise _fail(field, value, "must be a size like 512M or 2G")
    if nbytes < minimum:
        raise _fail(field, value, f"must be at least {format_size(minimum)}")
    maximum = MAX_SIZE if maximum is None else min(maximum, MAX_SIZE)
    if nbytes > maximum:
        raise _fail(field, value, f"must be at most {format_size(maximum)}")
    return nbytes


def integer(value: object, field: str, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        text = value.strip() if isinstance(value, str) else ""
        if is_digits(text.removeprefix("-")) and len(text) <= 40:  # int() refuses > 4,300 digits
            value = int(text)
        else:
            raise _fail(field, value, "must be an integer")
    if not minimum <= value <= maximum:
        raise _fail(field, value, f"must be between {minimum} and {maximum}")
    return value


def format_size(nbytes: int) -> str:
    """Largest of K/M/G that divides exactly (vzctl syntax); plain bytes otherwise."""
    for suffix in ("G", "M", "K"):
        unit = UNITS[suffix]
        if nbytes % unit == 0:
            return f"{nbytes // unit}{suffix}"
    return str(nbytes)


def vz_size(nbytes: int) -> str:
    """A size as vzctl reads it as meant: whole KiB (rounded down) with a unit.
    A bare number is pages for PHYSPAGES and 1K blocks for DISKSPACE, so 100.3M
    written as bytes would be 400 GiB of RAM."""
    return format_size(nbytes - nbytes % UNITS["K"])


_HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z")
_METRIC = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\Z")


def hostport(value: object, field: str, *, names: bool = False) -> tuple[str, int]:
    """HOST:PORT. HOST is an IPv4 address, or with `names` also a host name."""
    if not isinstance(value, str) or ":" not in value:
        raise _fail(field, value, "must be HOST:PORT")
    host, _, port = value.rpartition(":")
    is_name = names and _HOSTNAME.match(host) is not None and not is_digits(host.replace(".", ""))
    return host if is_name else str(ipv4(host, field)), integer(port, field, minimum=1, maximum=65535)


def metric_name(value: object, field: str) -> str:
    if not isinstance(value, str) or not _METRIC.match(value):
        raise _fail(field, value, "must be a dotted metric name")
    return value


# ---- argparse types: the same rules for command-line numbers ----------------
def int_arg(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse type: an integer of ASCII digits within bounds (int() takes
    '٣' and ' 5 ' too, and a port of -5 or 70000 would only fail later)."""
    def parse(text: str) -> int:
        body = text.removeprefix("-")
        if not is_digits(body) or len(body) > 19:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
        n = int(text)
        if not minimum <= n <= maximum:
            raise argparse.ArgumentTypeError(f"must be from {minimum} to {maximum}: {text!r}")
        return n
    return parse


def seconds_arg(minimum: float, maximum: float) -> Callable[[str], float]:
    """An argparse type: a plain decimal number of seconds within bounds (float()
    takes 'nan', 'inf' and '1e999')."""
    def parse(text: str) -> float:
        if not _DECIMAL.fullmatch(text):
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
        n = float(text)
        if not minimum <= n <= maximum:
            raise argparse.ArgumentTypeError(f"must be from {minimum:g} to {maximum:g}: {text!r}")
        return n
    return parse


_DECIMAL = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")
