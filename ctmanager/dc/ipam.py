"""Address and CTID allocation — pure functions over what is already used.

Each rack's /16 is cut into fixed ranges by the DC template (`[network]`):
gateway, nodes (by position), service CTs, other CTs. Ranges never overlap
(checked when the template loads), so a CT can never get an HN's address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from ..errors import ExhaustedError, InputError
from ..validate import MAX_CTID
from .model import OffsetRange

Net = ipaddress.IPv4Network


def address(net: Net, offset: int) -> str:
    return str(net.network_address + offset)


def offset_of(net: Net, ip: str) -> int:
    # inet_aton, not IPv4Address: allocation converts every used address of a rack.
    return int.from_bytes(socket.inet_aton(ip), "big") - int(net.network_address)


def node_address(net: Net, nodes: OffsetRange, position: int) -> str:
    """HN addresses follow rack positions: position 1 is the first of the range."""
    offset = nodes.first + position - 1
    if offset not in nodes:
        raise InputError(f"position {position} is beyond the node range {nodes} ({nodes.size} positions)")
    return address(net, offset)


def allocate(net: Net, pool: OffsetRange, used: Iterable[str], *, what: str) -> str:
    """Lowest free address of `pool` in `net`. Raises ExhaustedError when full."""
    taken = {offset_of(net, ip) for ip in used}
    for offset in range(pool.first, pool.last + 1):
        if offset not in taken:
            return address(net, offset)
    raise ExhaustedError(f"no free address left for {what}: all {pool.size} addresses of {net} range {pool} are in use")


def in_pool(net: Net, pool: OffsetRange, ip: str) -> bool:
    return ipaddress.IPv4Address(ip) in net and offset_of(net, ip) in pool



def next_ctid(counter: int, used: Iterable[int]) -> int:
    """The next CTID at or above `counter` that is not in use.

    The counter only ever grows, so a removed CT's CTID is never handed out
    again: its /data (kept after destroy) and any stale OpenVZ private area
    must never be inherited by a new CT.
    """
    taken = set(used)
    ctid = counter
    while ctid in taken:
        ctid += 1
    if ctid > MAX_CTID:
        raise ExhaustedError(f"no CTID left: the counter reached {MAX_CTID}")
    return ctid
