"""Signed state reports: what is accepted, what is dropped and why, and the log."""

from __future__ import annotations

import json
import logging
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctmanager.wire import reports
from ctmanager.wire.reports import CtState, Metrics, Receiver, Report, ReportError, sign, verify

KEY = b"k" * 32
NOW = 1_800_000_000.0


def report(seq: int = 1, *, boot: str = "0123456789abcdef", hn: str = "hn-101-1", sent_at: float = NOW,
           cts: tuple[CtState, ...] = (CtState(1001, "UP", NOW - 5),), rack: int = 101) -> Report:
    return Report(rack, hn, boot, seq, sent_at, False, Metrics(0.25, 64 << 30, 60 << 30, 1 << 40, 900 << 30, len(cts)), cts)


def reason(datagram: bytes, rack: int = 101) -> str:
    with pytest.raises(ReportError) as info:
        verify(datagram, KEY, rack)
    return info.value.reason


def test_round_trip() -> None:
    r = report(cts=tuple(CtState(1000 + i, "UP" if i % 2 else "DOWN", NOW - i) for i in range(100)))
    assert verify(sign(r, KEY), KEY, 101) == r


def test_forged_truncated_oversize_malformed_wrong_rack_are_dropped() -> None:
    good = sign(report(), KEY)
    assert reason(sign(report(), b"x" * 32)) == "forged"  # signed with another key
    assert reason(good[:-1]) == "forged"  # truncated body no longer matches its MAC
    assert reason(good[:20]) == "malformed"  # shorter than a MAC
    assert reason(good[:32] + b"x" * reports.MAX_DATAGRAM) == "oversize"  # rejected before any hashing
    assert reason(good, rack=102) == "wrong_rack"
    with pytest.raises(ReportError, match="oversize"):
        sign(report(cts=tuple(CtState(1000 + i, "UP", NOW) for i in range(1500))), KEY)


@pytest.mark.parametrize("patch", [
    {"v": 2}, {"hn": "HN_1"}, {"hn": "a;reboot"}, {"boot_id": "../x"}, {"seq": -1}, {"seq": "1"},
    {"drained": "no"}, {"sent_at": float("nan")}, {"cts": [{"ctid": 0, "opst": "UP", "since": 1}]},
    {"cts": [{"ctid": 1001, "opst": "RUNNING", "since": 1}]},
    {"cts": [{"ctid": 1001, "opst": "UP", "since": 1}, {"ctid": 1001, "opst": "UP", "since": 1}]},
    {"metrics": {"cpu_load": 0.1}}, {"cts": "all"},
    {"cts": [{"ctid": 1001, "opst": "UP", "since": 1, "spec": "not hex"}]},
    {"cts": [{"ctid": 1001, "opst": "UP", "since": 1, "spec": "ABCDEF0123456789"}]},
    {"cts": [{"ctid": 1001, "opst": "UP", "since": 1, "spec": "0" * 65}]},
    {"cts": [{"ctid": 1001, "opst": "UP", "since": 1, "spec": 12345}]},
    {"cts": [{"ctid": 1001, "opst": "UP", "since": 1, "spec": None}]},
])
def test_signed_but_malformed_bodies_are_dropped(patch: dict) -> None:
    body = json.loads(report().body())
    body.update(patch)
    raw = json.dumps(body).encode()
    import hashlib
    import hmac
    assert reason(hmac.new(KEY, raw, hashlib.sha256).digest() + raw) == "malformed"


def test_spec_hashes_ride_along_and_an_older_agent_s_report_has_none() -> None:
    hashed = report(cts=(CtState(1001, "UP", NOW - 5, "0c1f8a2d6e3b4a57"), CtState(1002, "DOWN", NOW - 9)))
    got = verify(sign(hashed, KEY), KEY, 101)
    assert got == hashed and [c.spec for c in got.cts] == ["0c1f8a2d6e3b4a57", ""]
    assert '"spec"' not in json.dumps(json.loads(report().body())["cts"])  # unknown: not sent at all
    old = json.loads(report().body())  # what an agent before spec hashes sends
    assert "spec" not in old["cts"][0] and reports.parse_body(json.dumps(old)).cts[0].spec == ""
    assert reports.parse_body(json.dumps({**old, "cts": [{**old["cts"][0], "spec": ""}]})).cts[0].spec == ""


def test_a_realistic_hn_s_report_with_spec_hashes_stays_small() -> None:
    hundred = tuple(CtState(1000 + i, "UP", NOW - i * 1.37, "0c1f8a2d6e3b4a57") for i in range(100))
    assert len(sign(report(cts=hundred), KEY)) < 10_000  # ~8.3 KB; a 10,000-CT rack of 100 HNs: 0.8 MB/s
    # A crowded HN (far beyond realistic) still reports, without its hashes, rather than not at all.
    crowded = tuple(CtState(1000 + i, "UP", NOW - i * 1.37, "0c1f8a2d6e3b4a57") for i in range(1000))
    got = verify(sign(report(cts=crowded), KEY), KEY, 101)
    assert len(got.cts) == 1000 and not any(c.spec for c in got.cts)


@given(st.binary(max_size=200))
def test_random_bytes_never_pass_or_crash(data: bytes) -> None:
    with pytest.raises(ReportError):
        verify(data, KEY, 101)


def test_receiver_drops_replays_and_old_boots_and_counts_them() -> None:
    rx = Receiver(KEY, 101)
    assert rx.receive(sign(report(5), KEY), "10.1.1.1", NOW)
    assert rx.receive(sign(report(5), KEY), "10.1.1.1", NOW) is None  # replayed
    assert rx.receive(sign(report(4), KEY), "10.1.1.1", NOW) is None  # older
    assert rx.receive(sign(report(6), KEY), "10.1.1.1", NOW).seq == 6
    # Reboot: a new boot id with seq 1 is fine if sent later; an old boot's datagram is not.
    assert rx.receive(sign(report(1, boot="fedcba9876543210", sent_at=NOW + 1), KEY), "10.1.1.1", NOW + 1)
    assert rx.receive(sign(report(99, boot="0123456789abcdef", sent_at=NOW), KEY), "10.1.1.1", NOW + 2) is None
    # A datagram from far in the past or future.
    assert rx.receive(sign(report(7, hn="hn-101-2", sent_at=NOW - 3600), KEY), "10.1.1.2", NOW) is None
    assert rx.drops == {"stale": 4}
    assert rx.latest["hn-101-1"].boot_id == "fedcba9876543210" and rx.accepted == 3


def test_drops_are_logged_once_per_source_and_reason_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    rx = Receiver(KEY, 101)
    forged = sign(report(), b"x" * 32)
    with caplog.at_level(logging.WARNING, logger="ctmanager.wire.reports"):
        for i in range(100):
            rx.receive(forged, "10.9.9.9", NOW + i * 0.5)  # 50 s of flooding
        rx.receive(forged, "10.9.9.8", NOW)
        rx.receive(forged, "10.9.9.9", NOW + 61)
    lines = [r.getMessage() for r in caplog.records]
    assert [line for line in lines if "bad MAC" in line] == lines[:2] + lines[3:] and len(lines) == 4
    assert lines[2] == "99 more dropped report(s) (forged) were not logged"
    assert rx.drops == {"forged": 102}


def test_a_receiver_reuses_an_unchanged_ct_list_and_checks_a_changed_one() -> None:
    key = b"k" * 32
    rx = Receiver(key, 101)
    cts = (CtState(1001, "UP", 5.0), CtState(1002, "DOWN", 6.0))

    def send(seq: int, states: tuple[CtState, ...]) -> Report | None:
        return rx.receive(sign(Report(101, "hn-101-1", "0123456789abcdef", seq, time.time(), False,
                                      Metrics(0.1, 1, 1, 1, 1, 1), states), key), "10.0.0.1", time.time())

    first, second = send(1, cts), send(2, cts)
    assert first is not None and second is not None and second.cts is first.cts  # not checked and built again
    changed = send(3, (CtState(1001, "DOWN", 7.0), CtState(1002, "DOWN", 6.0)))
    assert changed is not None and [c.opst for c in changed.cts] == ["DOWN", "DOWN"]
    bad = sign(Report(101, "hn-101-1", "0123456789abcdef", 4, time.time(), False, Metrics(0.1, 1, 1, 1, 1, 1),
                      (CtState(1001, "UP", 5.0), CtState(1001, "UP", 5.0))), key)
    assert rx.receive(bad, "10.0.0.1", time.time()) is None and rx.drops["malformed"] == 1


def test_a_report_says_its_sender_s_version_and_an_older_sender_s_has_none() -> None:
    from ctmanager import __version__

    got = verify(sign(report(), KEY), KEY, 101)
    assert got.sw == __version__  # `hn list` shows it during a rolling upgrade
    body = json.loads(report().body())
    del body["sw"]  # what an agent older than the field sends: still taken in
    assert reports.parse_body(json.dumps(body)).sw == ""
    body["sw"] = "1:2.0~rc1+deb12u1"  # a Debian version, epoch and all
    assert reports.parse_body(json.dumps(body)).sw == "1:2.0~rc1+deb12u1"
    for odd in ("1.0\n<script>", 7, "x" * 200):  # shown as '?', and the report (the HN's vote) still counts
        body["sw"] = odd
        assert reports.parse_body(json.dumps(body)).sw == "?"
