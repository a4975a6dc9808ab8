"""Property tests for the boundary parsers (issue: hardening): generated input
never raises anything but the project's typed errors, and a refused edit never
changes the store. Each parser gets raw junk and, more to the point, valid input
with one value replaced by a generated one (junk is refused at the first byte)."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctmanager import validate as v
from ctmanager.dc import manifest, template, tomlread
from ctmanager.errors import CtmError, InputError
from ctmanager.operations import inventory
from ctmanager.wire import spec as wirespec
from ctmanager.wire.reports import CtState, Metrics, Receiver, Report, sign
from tests.conftest import dump

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = ROOT / "templates" / "dc"
EXAMPLE = (EXAMPLE_DIR / "example.toml").read_text()
MANIFEST = (EXAMPLE_DIR / "manifests" / "rack-102.toml").read_text()
KEY = b"k" * 32
NOW = 1_800_000_000.0
# CTMANAGER_FUZZ_EXAMPLES=2000 for a longer hunt (about 1.5 minutes); CI runs 150 each.
FUZZ = settings(max_examples=int(os.environ.get("CTMANAGER_FUZZ_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
toml_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
    st.text(max_size=40), st.lists(st.integers(-5, 5) | st.text(max_size=8), max_size=3))
texty = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)


def toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string reads JSON's escapes
    return "[" + ", ".join(toml_literal(x) for x in value) + "]"


def replace_one_value(text: str, index: int, new: Any) -> str:
    """`text` with the value of its index-th `key = value` line replaced."""
    lines = text.splitlines()
    spots = [i for i, line in enumerate(lines) if re.match(r"\s*[a-z_]+\s*=", line)]
    i = spots[index % len(spots)]
    key = lines[i].split("=", 1)[0]
    lines[i] = f"{key}= {toml_literal(new)}"
    return "\n".join(lines) + "\n"


# ---- the report receiver ---------------------------------------------------------
def good_body() -> dict[str, Any]:
    r = Report(101, "hn-101-1", "0123456789abcdef", 7, NOW, False, Metrics(0.1, 1, 1, 1, 1, 1),
               (CtState(1001, "UP", 5.0, "ab" * 8),), False, {"manager": 0.5})
    return json.loads(sign(r, KEY)[32:])


def signed(body: bytes) -> bytes:
    return hmac.new(KEY, body, hashlib.sha256).digest() + body


@FUZZ
@given(st.binary(max_size=300))
def test_the_receiver_takes_any_signed_bytes_without_raising(body: bytes) -> None:
    rx = Receiver(KEY, 101)
    assert rx.receive(signed(body), "10.0.0.1", NOW) is None and sum(rx.drops.values()) == 1


@FUZZ
@given(st.sampled_from(sorted(good_body())), json_values, st.sampled_from(["", "metrics", "cts", "hears"]))
def test_the_receiver_takes_a_report_with_any_one_field_replaced(key: str, value: Any, inner: str) -> None:
    body = good_body()
    if inner == "metrics":
        body["metrics"][sorted(body["metrics"])[len(key) % 6]] = value
    elif inner == "cts":
        body["cts"][0][sorted(body["cts"][0])[len(key) % 4]] = value
    elif inner == "hears":
        body["hears"] = {str(value)[:20]: value}
    else:
        body[key] = value
    rx = Receiver(KEY, 101)
    got = rx.receive(signed(json.dumps(body).encode()), "10.0.0.1", NOW)
    assert got is None or isinstance(got, Report)
    assert (got is None) == (sum(rx.drops.values()) == 1)


# ---- the ctagent apply spec reader ------------------------------------------------------
def good_spec() -> dict[str, Any]:
    return {"ctid": 1005, "hostname": "myhost", "rack": 101, "tenant": "myhost", "service": None, "env": "prod",
            "ip": "10.101.4.1", "storage": "storage-101-4", "admst": "UP", "apps": ["jira"], "dc": "dc1",
            "resources": {"memory": "4G", "swap": "0", "disk": "20G", "cpus": 2, "cpuunits": 1000, "cpulimit": 200},
            "net": {"bridge": "br0", "prefixlen": 16, "gateway": "10.101.0.1"},
            "dns": {"nameservers": ["10.101.0.1"], "search": ["myhost.example.net"]}}


@FUZZ
@given(st.binary(max_size=300))
def test_the_spec_reader_refuses_any_bytes_with_an_input_error(raw: bytes) -> None:
    try:
        wirespec.parse(raw, 1005)
    except InputError:
        pass


@FUZZ
@given(st.sampled_from(sorted(good_spec())), json_values, st.sampled_from(["", "resources", "net", "dns"]))
def test_the_spec_reader_takes_a_spec_with_any_one_field_replaced(key: str, value: Any, inner: str) -> None:
    spec = good_spec()
    if inner:
        spec[inner][sorted(spec[inner])[len(key) % len(spec[inner])]] = value
    else:
        spec[key] = value
    try:
        got = wirespec.parse(json.dumps(spec).encode(), 1005)
    except InputError:
        return
    assert got.ct.ctid == 1005 and v.is_label(got.ct.hostname) and "\n" not in repr(got)


def test_the_literal_spec_above_is_valid() -> None:
    assert wirespec.parse(json.dumps(good_spec()).encode(), 1005).ct.hostname == "myhost"


# ---- the template and manifest loaders ------------------------------------------------------
@FUZZ
@given(st.integers(0, 10_000), toml_values)
def test_the_template_loader_refuses_any_one_bad_value_with_an_input_error(index: int, value: Any) -> None:
    text = replace_one_value(EXAMPLE, index, value)
    try:
        template.loads(text.encode(), "dc.toml", EXAMPLE_DIR)
    except InputError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(st.text(max_size=200))
def test_the_toml_reader_refuses_any_text_with_an_input_error(text: str) -> None:
    try:
        tomlread.parse(text.encode("utf-8", "surrogatepass"), "x.toml")
    except InputError:
        pass


@FUZZ
@given(st.integers(0, 10_000), toml_values)
def test_the_manifest_loader_refuses_any_one_bad_value_with_an_input_error(tmp_path_factory: pytest.TempPathFactory,
                                                                            index: int, value: Any) -> None:
    dc = template.load(EXAMPLE_DIR / "example.toml")
    path = tmp_path_factory.mktemp("m") / "rack.toml"
    path.write_text(replace_one_value(MANIFEST, index, value))
    try:
        nodes = manifest.load(path, dc)
    except InputError:
        return
    assert all(v.is_label(n.sku) for n in nodes)


# ---- the CLI validators and the inventory they guard ----------------------------------------
VALIDATORS = [
    lambda x: v.label(x, "f"), lambda x: v.hostname(x, "f"), lambda x: v.zone(x, "f"), lambda x: v.path(x, "f"),
    lambda x: v.mac(x, "f"), lambda x: v.ipv4(x, "f"), lambda x: v.size(x, "f"), lambda x: v.serial(x, "f"),
    lambda x: v.integer(x, "f", minimum=0, maximum=10), lambda x: v.hostport(x, "f", names=True),
    lambda x: v.metric_name(x, "f"), lambda x: v.ifname(x, "f"),
]


@FUZZ
@given(st.integers(0, len(VALIDATORS) - 1), texty | json_values)
def test_every_validator_answers_or_refuses_with_an_input_error(which: int, value: Any) -> None:
    try:
        got = VALIDATORS[which](value)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    assert not any(c in str(got) for c in "\n\r\"';{}` ")


@FUZZ
@given(st.text(max_size=30))
def test_numeric_arguments_answer_or_refuse_with_an_argparse_error(text: str) -> None:
    for parse in (v.int_arg(0, 65535), v.seconds_arg(0, 86400)):
        try:
            n = parse(text)
        except argparse.ArgumentTypeError:
            continue
        assert 0 <= n <= 86400


@FUZZ
@given(hostname=texty, rack=st.integers(-5, 300), memory=st.one_of(texty, st.integers(-(2**70), 2**70)),
       cpus=st.one_of(texty, st.integers(-5, 10_000)), ctid=st.one_of(st.none(), st.integers(-5, 2**32)),
       tenant=st.one_of(st.none(), st.sampled_from(["myhost", "acme", "nobody"]), texty))
def test_a_refused_ct_add_never_changes_the_store(inv: inventory.Inventory, hostname: str, rack: int, memory: Any,
                                                  cpus: Any, ctid: int | None, tenant: str | None) -> None:
    from ctmanager.dc import resources

    before = dump(inv.store.path)
    try:
        with inv.store.transaction():
            res = resources.parse({"memory": memory, "cpus": cpus}, inv.dc.defaults, None, "ct")
            inv.add_ct(hostname, rack, resources=res, tenant=tenant, ctid=ctid)
    except CtmError as exc:
        assert "\n" not in str(exc)
        assert dump(inv.store.path) == before
        return
    with inv.store.transaction():
        inv.rm_ct(hostname)


def test_no_validator_backtracks_on_a_long_almost_valid_value() -> None:
    """Every validator, every shape of "valid for a long while, then one bad
    character": a nested quantifier would take hours here (a watchdog turns that
    into a failure after 60 s); a linear match takes milliseconds for all."""
    import itertools
    import signal

    def hung(*_: object) -> None:
        raise AssertionError("a validator backtracks: a regular expression with a nested quantifier?")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        for check, head, unit, tail in itertools.product(
                VALIDATORS, ["", "/", "a.", "a:"], ["a", "a.", "a-", "/a", "1.", "aa:", "-", "a/"],
                [" ", "!", "\n", "/", ".", "-", "%", ":"]):
            for times in (24, 600):
                try:
                    check(head + unit * times + tail)
                except InputError:
                    pass
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---- the ctmailmap request parser -------------------------------------------------------
@pytest.fixture(scope="module")
def mailmap(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from ctmanager.proxies.mailmap import MailMap
    from ctmanager.store import open_store

    path = tmp_path_factory.mktemp("mm") / "s.db"
    with open_store(path, create=True) as s, s.transaction():
        inventory.init(s, EXAMPLE_DIR / "example.toml")
    m = MailMap(path)
    m.refresh()
    assert m.index is not None
    return m


requests = st.one_of(
    st.binary(max_size=120),
    st.builds(lambda k: b"get " + k, st.binary(max_size=80)),
    st.builds(lambda k: b"get " + k.encode("utf-8", "surrogatepass"), st.text(max_size=60)),
    st.builds(lambda local, d: f"get {local}@{d}".encode("ascii", "backslashreplace"),
              st.text(max_size=20), st.sampled_from(["myhost.example.net", "acme.example.net", "x.example.net",
                                                       "%0Aevil", "a%00b", "%ZZ", "%"])),
)


@FUZZ
@given(requests)
def test_ctmailmap_answers_any_request_with_one_line_and_a_code(mailmap, line: bytes) -> None:  # noqa: ANN001
    got = mailmap.answer(line)
    assert got.endswith(b"\n") and got.count(b"\n") == 1 and b"\r" not in got, got
    assert got[:4] in (b"200 ", b"400 ", b"500 "), got
    assert all(32 <= c < 127 for c in got[:-1]), got  # tcp_table: printable ASCII, %XX for the rest
