"""IPAM: allocation never overlaps node/service ranges or other CTs, addresses
stay stable for a CT's life, CTIDs are never reused."""

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctmanager.dc import ipam
from ctmanager.dc.model import OffsetRange
from ctmanager.errors import ExhaustedError

NET = ipaddress.IPv4Network("10.101.0.0/16")
NODES = OffsetRange(257, 510)
SERVICES = OffsetRange(513, 1022)
CTS = OffsetRange(1025, 1040)  # small on purpose: exhaustion is reachable


def test_node_addresses_follow_position() -> None:
    assert ipam.node_address(NET, NODES, 1) == "10.101.1.1"
    assert ipam.node_address(NET, NODES, 4) == "10.101.1.4"


def test_exhaustion_is_a_clear_error() -> None:
    used = [ipam.address(NET, o) for o in range(CTS.first, CTS.last + 1)]
    with pytest.raises(ExhaustedError, match="no free address left for CTs in rack-101: all 16 addresses"):
        ipam.allocate(NET, CTS, used, what="CTs in rack-101")


# ops: ("add", key) or ("rm", index into current CTs)
ops = st.lists(st.tuples(st.sampled_from(["add", "rm"]), st.integers(min_value=0, max_value=50)), max_size=80)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_allocation_never_overlaps_and_is_stable(sequence: list[tuple[str, int]]) -> None:
    live: dict[int, str] = {}  # ct key -> ip
    next_key = 0
    for op, n in sequence:
        if op == "add":
            before = dict(live)
            try:
                ip = ipam.allocate(NET, CTS, live.values(), what="CTs")
            except ExhaustedError:
                assert len(live) == CTS.size
                continue
            assert ip not in live.values(), "address handed out twice"
            assert ipam.in_pool(NET, CTS, ip)
            off = ipam.offset_of(NET, ip)
            assert off not in NODES and off not in SERVICES
            live[next_key] = ip
            next_key += 1
            assert all(live[k] == before[k] for k in before), "existing CT's address changed"
        elif live:
            key = sorted(live)[n % len(live)]
            del live[key]
    assert len(set(live.values())) == len(live)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=30)), max_size=60))
def test_ctids_unique_and_never_reused(sequence: list[tuple[bool, int]]) -> None:
    counter = 1000
    live: set[int] = set()
    ever: set[int] = set()
    for add, n in sequence:
        if add:
            ctid = ipam.next_ctid(counter, live)
            assert ctid not in ever, "a removed CT's CTID came back"
            live.add(ctid)
            ever.add(ctid)
            counter = ctid + 1
        elif live:
            live.discard(sorted(live)[n % len(live)])
