"""Hostile and careless input (issue: hardening): each test failed before its fix.
The classes behind them are tested too: every CTID rule, every digit test, every
numeric CLI argument, every size vzctl reads."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from ctmanager import validate as v
from ctmanager.cli import common
from ctmanager.errors import ConflictError, InputError
from ctmanager.operations import inventory
from ctmanager.render.tree import render_tree
from ctmanager.store import queries
from ctmanager.wire import spec as wirespec
from ctmanager.wire.spec import spec_for
from tests.conftest import dump, manager_toml


def change(inv: inventory.Inventory, fn, *args, **kw):
    with inv.store.transaction():
        return fn(*args, **kw)


# ---- 1, 2: CTIDs ------------------------------------------------------------
def test_a_removed_ctid_is_refused_even_when_asked_for_by_number(inv: inventory.Inventory) -> None:
    res = inv.dc.defaults
    old = change(inv, inv.add_ct, "olddata", 101, resources=res, tenant="acme")
    change(inv, inv.rm_ct, "olddata")
    with pytest.raises(ConflictError, match=rf"CTID {old.ctid} was given to olddata on .*never reused"):
        change(inv, inv.add_ct, "newcomer", 101, resources=res, tenant="myhost", ctid=old.ctid)
    purged = change(inv, inv.add_ct, "purged", 101, resources=res)
    change(inv, inv.rm_ct, "purged", purge=True)
    with pytest.raises(ConflictError, match="never reused"):
        change(inv, inv.add_ct, "newcomer", 101, resources=res, ctid=purged.ctid)
    new = change(inv, inv.add_ct, "newcomer", 101, resources=res, tenant="myhost")
    assert new.ctid not in (old.ctid, purged.ctid)


def test_a_forgotten_tombstone_still_keeps_its_ctid(inv: inventory.Inventory) -> None:
    """The manager drops a tombstone once no HN has the CT; its /data can still be kept."""
    ct = change(inv, inv.add_ct, "gone", 101, resources=inv.dc.defaults)
    change(inv, inv.rm_ct, "gone")
    with inv.store.transaction(config=False):
        inv.store.execute("DELETE FROM removed")
    with pytest.raises(ConflictError, match="never reused"):
        change(inv, inv.add_ct, "again", 101, resources=inv.dc.defaults, ctid=ct.ctid)


def test_an_explicit_ctid_does_not_move_the_allocator(inv: inventory.Inventory) -> None:
    res = inv.dc.defaults
    first = change(inv, inv.add_ct, "a", 101, resources=res)
    top = change(inv, inv.add_ct, "typo", 101, resources=res, ctid=v.MAX_CTID)
    assert top.ctid == 2147483644  # vzctl's largest
    after = change(inv, inv.add_ct, "b", 101, resources=res)
    assert after.ctid == first.ctid + 1
    change(inv, inv.rm_ct, "typo")
    assert change(inv, inv.add_ct, "c", 101, resources=res).ctid == first.ctid + 2
    ahead = change(inv, inv.add_ct, "ahead", 101, resources=res, ctid=first.ctid + 3)
    assert change(inv, inv.add_ct, "d", 101, resources=res).ctid == ahead.ctid + 1  # skipped, not reused
    with pytest.raises(InputError, match="between 101 and 2147483644"):
        change(inv, inv.add_ct, "over", 101, resources=res, ctid=v.MAX_CTID + 1)


def test_a_bad_ctid_changes_nothing(example_store, store_path: Path) -> None:
    before = dump(store_path)
    for ctid in ("2147483645", "\u0663\u0663\u0663\u0663", "1e3", " 1009", "1005"):
        got = example_store("ct", "add", "x", "--rack", "101", "--ctid", ctid, check=False)
        assert got.returncode == 2, (ctid, got.stderr)
        assert len(got.stderr.strip().splitlines()) == 1 and "Traceback" not in got.stderr
    assert dump(store_path) == before


def test_ctids_beyond_what_vzctl_takes_are_refused_at_every_boundary(inv: inventory.Inventory) -> None:
    from ctmanager.agent.cli import _ctid

    with pytest.raises(argparse.ArgumentTypeError):
        _ctid("2147483645")
    with pytest.raises(argparse.ArgumentTypeError):
        _ctid("9" * 5000)  # int() refuses more than 4,300 digits: no ValueError escapes
    assert _ctid("2147483644") == 2147483644
    with pytest.raises(InputError, match="spec.ctid"):
        wirespec.parse(spec_text(inv, ctid=2147483645), 2147483645)
    assert wirespec.parse(spec_text(inv), 1005).ct.hostname == "myhost"


# ---- 13: names that are numbers ---------------------------------------------
def test_a_hostname_or_tenant_may_not_be_all_digits(inv: inventory.Inventory) -> None:
    with pytest.raises(InputError, match="may not be all digits"):
        change(inv, inv.add_ct, "1005", 101, resources=inv.dc.defaults)
    with pytest.raises(InputError, match="may not be all digits"):
        change(inv, inv.add_tenant, "4242", 101, (), inv.dc.defaults)
    with pytest.raises(InputError, match="spec.hostname"):
        wirespec.parse(spec_text(inv, hostname="1005"), 1005)
    assert change(inv, inv.add_ct, "1005a", 101, resources=inv.dc.defaults).hostname == "1005a"
    assert queries.find_ct(inv.store, "1005").hostname == "myhost"  # a number still means a CTID


# ---- 4: OpenVZ sizes ----------------------------------------------------------
def test_openvz_sizes_always_carry_a_unit_vzctl_reads_as_meant(inv: inventory.Inventory, tmp_path: Path) -> None:
    from ctmanager.dc import resources

    odd = resources.parse({"memory": "100.3M", "disk": "1.7G", "swap": "1000"}, inv.dc.defaults, None, "ct")
    ct = change(inv, inv.add_ct, "m", 101, resources=odd)
    render_tree(inv.store, tmp_path / "out")
    text = (tmp_path / "out" / "rack-101" / "openvz" / f"{ct.ctid}.conf").read_text()
    values = dict(re.findall(r'^(PHYSPAGES|SWAPPAGES|DISKSPACE)="([^"]*)"', text, re.M))
    assert values["PHYSPAGES"] == f"0:{(odd.memory // 1024)}K" == "0:102707K"
    assert values["SWAPPAGES"] == "0:0G"  # 1000 bytes is less than 1K: none
    barrier, limit = values["DISKSPACE"].split(":")
    assert barrier == f"{odd.disk // 1024}K" and re.fullmatch(r"\d+[KMG]", limit), values
    assert v.vz_size(5 * 1024**3) == "5G" and v.vz_size(1536) == "1K"


# ---- the classes: digits and numeric arguments --------------------------------
@pytest.mark.parametrize("text", ["\u00b2", "\u0663", "--5", "5 5", "", "9" * 5000, "0x10", "1_000"])
def test_integers_are_ascii_digits_only(text: str) -> None:
    with pytest.raises(InputError):
        v.integer(text, "f", minimum=-(10**30), maximum=10**30)
    with pytest.raises(argparse.ArgumentTypeError):
        common.integer(text)


@pytest.mark.parametrize("text", ["nan", "inf", "-1", "1e999", "\u0663", "1e3", "", "99999"])
def test_seconds_arguments_are_plain_finite_numbers_in_range(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        common.seconds_in(0, 86400)(text)


def test_ports_are_ports() -> None:
    for bad in ("0", "65536", "-5", "\u0665\u0663"):
        with pytest.raises(argparse.ArgumentTypeError):
            common.port(bad)
    assert common.port("53") == 53 and common.seconds_in(0, 10)("2.5") == 2.5


def test_numeric_cli_arguments_fail_in_one_line(example_store) -> None:
    for argv, says in ((["socks", "allow", "app", "10.0.0.1", "--port", "\u0663"], "--port: not an integer"),
                       (["ct", "add", "r", "--rack", "101", "--cpus=--5"], "ct.cpus: must be an integer"),
                       (["ct", "add", "r", "--rack", "101", "--cpus=\u00b2"], "ct.cpus: must be an integer"),
                       (["dns", "sync", "--retry", "nan"], "--retry: not a number of seconds"),
                       (["edge", "config", "/tmp/x", "--http-port", "70000"], "--http-port: must be from 1 to 65535")):
        got = example_store(*argv, check=False)
        assert got.returncode == 2 and says in got.stderr, (argv, got.stderr)
        assert len(got.stderr.strip().splitlines()) == 1 and "Traceback" not in got.stderr, (argv, got.stderr)


def spec_text(inv: inventory.Inventory, **changes: object) -> bytes:
    """myhost's real spec with `changes`, as `ctagent apply` reads it."""
    import json

    return json.dumps({**spec_for(queries.find_ct(inv.store, "myhost"), inv.dc), **changes}).encode()


# ---- 9: secrets in errors, 15: secrets open to others ---------------------------
def fencing_toml(tmp_path: Path, fencing: str) -> Path:
    return manager_toml(tmp_path, f"[fencing]\n{fencing}\n")


@pytest.mark.parametrize("fencing", [
    'fence_command = "fence_ipmilan -a {ip} -l admin -p Hunter2-BMC -o off"',
    'fence_command = ["fence_ipmilan", "-p", "Hunter2-BMC", 735194]',
    'fence_command = [["fence_ipmilan", "-p", "Hunter2-BMC"]]',
    'fence_command = {password = "Hunter2-BMC"}',
])
def test_a_refused_fence_command_is_never_shown(tmp_path: Path, fencing: str) -> None:
    from ctmanager.manager import config as mconfig

    with pytest.raises(InputError) as got:
        mconfig.load(fencing_toml(tmp_path, fencing))
    assert "fence_command" in str(got.value) and "not shown" in str(got.value)
    assert "Hunter2" not in str(got.value) and "735194" not in str(got.value)


def test_the_configs_never_show_their_secrets_in_a_repr(tmp_path: Path) -> None:
    from ctmanager.manager import config as mconfig

    cfg = mconfig.load(fencing_toml(tmp_path, 'fence_command = ["fence_ipmilan", "-p", "Hunter2-BMC"]'))
    assert cfg.fence_command[-1] == "Hunter2-BMC"
    assert "Hunter2" not in repr(cfg) and "00000000" not in repr(cfg)


def test_a_fence_tools_output_is_logged_without_its_arguments() -> None:
    from ctmanager.manager.ports import redact

    argv = ["fence_ipmilan", "-a", "10.0.0.9", "-l", "admin", "-p", "Hunter2-BMC", "-o", "off", "-n", "hn-101-2"]
    line = "Failed: fence_ipmilan -a 10.0.0.9 -l admin -p Hunter2-BMC: unable to connect to hn-101-2 (10.0.0.9)"
    got = redact(line, argv, "hn-101-2", "10.0.0.9")
    assert "Hunter2" not in got and "admin" not in got and "hn-101-2" in got and "10.0.0.9" in got


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o660, 0o606])
def test_a_rack_key_open_to_other_users_is_refused(tmp_path: Path, mode: int) -> None:
    from ctmanager.wire.reports import read_key

    key = tmp_path / "rack.key"
    key.write_text("00" * 32)
    key.chmod(mode)
    with pytest.raises(InputError, match=f"open to other users \\(mode {mode:04o}\\): chmod 600"):
        read_key(key, "agent.toml")
    key.chmod(0o640)  # the group may read
    assert read_key(key, "agent.toml") == bytes(32)


# ---- 7: the report receiver ------------------------------------------------------
def signed(body: bytes, key: bytes = b"k" * 32) -> bytes:
    import hashlib
    import hmac

    return hmac.new(key, body, hashlib.sha256).digest() + body


def a_report(seq: int = 1, sent_at: float = 1_800_000_000.0, boot: str = "0123456789abcdef"):
    from ctmanager.wire.reports import CtState, Metrics, Report

    return Report(101, "hn-101-1", boot, seq, sent_at, False, Metrics(0.1, 1, 1, 1, 1, 1),
                  (CtState(1001, "UP", 5.0),))


@pytest.mark.parametrize("body", [b"[" * 20000, b"{\"v\":" * 20000, b'{"a":' * 5000 + b"1" + b"}" * 5000])
def test_deeply_nested_bodies_behind_a_good_mac_are_dropped_not_raised(body: bytes) -> None:
    from ctmanager.wire.reports import Receiver

    rx = Receiver(b"k" * 32, 101)
    assert rx.receive(signed(body[:59000]), "10.0.0.1", 1_800_000_000.0) is None
    assert rx.drops == {"malformed": 1}


def test_a_restarted_receiver_takes_no_capture_older_than_the_window() -> None:
    from ctmanager.wire.reports import WINDOW, Receiver, sign

    now = 1_800_000_000.0
    captured = sign(a_report(5, now - 60), b"k" * 32)  # a minute old: the old window was 300 s
    rx = Receiver(b"k" * 32, 101)
    assert rx.receive(captured, "10.0.0.1", now) is None and rx.drops == {"stale": 1}
    assert rx.receive(sign(a_report(6, now - WINDOW / 2), b"k" * 32), "10.0.0.1", now) is not None


def test_a_huge_seq_cannot_lock_out_the_genuine_reports() -> None:
    from ctmanager.wire.reports import Receiver, sign

    now, key = 1_800_000_000.0, b"k" * 32
    rx = Receiver(key, 101)
    assert rx.receive(sign(a_report(1, now), key), "10.0.0.1", now)
    assert rx.receive(sign(a_report(2**80, now + 0.5), key), "10.0.0.1", now + 0.5) is None  # beyond 2**53
    assert rx.receive(sign(a_report(10**15, now + 0.6), key), "10.0.0.1", now + 0.6) is None  # a jump
    assert rx.drops == {"malformed": 1, "seq_jump": 1}
    assert rx.receive(sign(a_report(2, now + 1), key), "10.0.0.1", now + 1) is not None
    # after an hour unheard, an agent that reported on every change is still taken in
    assert rx.receive(sign(a_report(30_000, now + 3600), key), "10.0.0.1", now + 3600) is not None


def test_a_flood_from_many_addresses_logs_a_few_lines_and_remembers_little(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from ctmanager.wire.reports import MAX_LOGGED, Receiver, sign

    now = 1_800_000_000.0
    rx = Receiver(b"k" * 32, 101)
    forged = sign(a_report(1, now), b"x" * 32)
    with caplog.at_level(logging.WARNING, logger="ctmanager.wire.reports"):
        for i in range(100_000):
            rx.receive(forged, f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", now + i * 0.0001)
        rx.receive(forged, "10.200.0.1", now + 70)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 7 and "99995 more dropped report(s) (forged) were not logged" in lines
    assert len(rx._logged) <= MAX_LOGGED and rx.drops == {"forged": 100_001}
