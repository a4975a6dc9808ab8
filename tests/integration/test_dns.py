"""DNS routing against a real BIND 9: publish, move a route, delete, a name held
by someone else, a wrong TSIG key, the server down and back, a change too big for
one message. The zones come from `ctmanager dns bind-config`."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bindserver import Bind, free_port

from tests.conftest import Cli, dump, raw_sql

NEEDED = ("named", "tsig-keygen", "dig", "nsupdate")


@pytest.fixture
def bind(example_store: Cli, tmp_path: Path) -> Iterator[tuple[Cli, Bind]]:
    missing = [t for t in NEEDED if not shutil.which(t) and not Path("/usr/sbin", t).exists()]
    if missing:
        pytest.skip(f"needs BIND 9 ({', '.join(missing)} missing; bash scripts/setup.sh)")
    port = free_port()
    example_store("dns", "bind-config", str(tmp_path / "bind"), "--port", str(port))
    server = Bind(tmp_path / "bind", port)
    server.start()
    try:
        example_store("dns", "configure", "--server", f"127.0.0.1:{port}", "--key-file",
                      str(tmp_path / "bind" / "tsig.key"))
        yield example_store, server
    finally:
        server.stop()


def nsupdate(server: Bind, script: str) -> None:
    key = (server.folder / "tsig.key").read_text()
    secret = key.split('secret "')[1].split('"')[0]
    p = subprocess.run(["nsupdate", "-y", f"hmac-sha256:ctmanager:{secret}"], input=f"server 127.0.0.1 {server.port}\n"
                       f"{script}\nsend\n", capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr


def test_sync_publishes_every_record_and_a_ct_resolves_smtp_by_its_chain(bind: tuple[Cli, Bind]) -> None:
    cli, server = bind
    out = json.loads(cli("dns", "sync", "--json").stdout)
    assert out["error"] == "" and len(out["applied"]) > 20 and out["conflicts"] == []
    assert server.query("relay-101-1.rack-101.uc-inf.net.internal.") == ["10.101.2.2"]
    assert server.query("hn-101-1.rack-101.uc-inf.net.internal.") == ["10.101.1.1"]
    assert server.query("relay-101.rack-101.uc-inf.net.internal.") == ["10.101.2.2", "10.101.2.3"]  # the pool
    # `smtp` with myhost's search path: BIND, authoritative for both zones, follows the CNAME chain
    chain = server.dig("smtp", "+search", "+domain=myhost.example.net.internal").split()
    assert chain[0] == "relay-101.rack-101.uc-inf.net.internal." and sorted(chain[1:]) == ["10.101.2.2", "10.101.2.3"]
    assert server.query("myhost.example.net.internal.", "CNAME") == ["myhost.rack-101.uc-inf.net.internal."]
    again = json.loads(cli("dns", "sync", "--json").stdout)
    assert again["applied"] == [] and again["messages"] == 0  # nothing to do costs nothing


def test_route_set_moves_load_at_once(bind: tuple[Cli, Bind]) -> None:
    cli, server = bind
    cli("dns", "sync")
    p = cli("route", "set", "myhost", "smtp", "relay-101-2")
    assert "dns: published 1 change(s)" in p.stderr
    assert server.query("smtp.myhost.example.net.internal.", "CNAME") == ["relay-101-2.rack-101.uc-inf.net.internal."]


def test_removed_records_are_deleted(bind: tuple[Cli, Bind]) -> None:
    cli, server = bind
    cli("dns", "sync")
    cli("route", "rm", "myhost", "smtp")
    assert server.query("smtp.myhost.example.net.internal.", "CNAME") == []
    cli("tenant", "rm", "acme")
    assert server.query("acme.rack-101.uc-inf.net.internal.") == []
    assert server.query("acme.example.net.internal.", "CNAME") == []


def test_a_name_someone_else_holds_is_left_alone_and_reported(bind: tuple[Cli, Bind]) -> None:
    cli, server = bind
    nsupdate(server, "update add smtp.myhost.example.net.internal. 300 CNAME mail.elsewhere.example.")
    p = cli("dns", "sync", check=False)
    assert p.returncode == 1
    assert "CONFLICT smtp.myhost.example.net.internal. is already in use by records ctmanager did not create" in p.stdout
    assert server.query("smtp.myhost.example.net.internal.", "CNAME") == ["mail.elsewhere.example."]
    assert server.query("relay-101-1.rack-101.uc-inf.net.internal.") == ["10.101.2.2"]  # the rest went out
    assert "! smtp.myhost.example.net.internal.:" in cli("dns", "diff").stdout


def test_drift_in_a_record_of_ours_is_found_and_put_back(bind: tuple[Cli, Bind]) -> None:
    cli, server = bind
    cli("dns", "sync")
    nsupdate(server, "update delete relay-101-1.rack-101.uc-inf.net.internal. A\n"
                     "update add relay-101-1.rack-101.uc-inf.net.internal. 60 A 192.0.2.66")
    p = cli("dns", "verify", "--no-repair", check=False)
    assert p.returncode == 1 and "published 10.101.2.2, zone has 192.0.2.66" in p.stdout
    assert "1 repaired" in cli("dns", "verify").stdout
    assert server.query("relay-101-1.rack-101.uc-inf.net.internal.") == ["10.101.2.2"]


def test_a_wrong_tsig_key_applies_nothing(bind: tuple[Cli, Bind], tmp_path: Path) -> None:
    cli, server = bind
    wrong = tmp_path / "wrong.key"
    wrong.write_text(subprocess.run(["tsig-keygen", "-a", "hmac-sha256", "ctmanager"], capture_output=True,
                                    text=True).stdout)
    wrong.chmod(0o600)
    cli("dns", "configure", "--server", f"127.0.0.1:{server.port}", "--key-file", str(wrong))
    p = cli("dns", "sync", check=False)
    assert p.returncode == 1 and "TSIG" in p.stdout and "PENDING" in p.stdout
    assert server.query("relay-101-1.rack-101.uc-inf.net.internal.") == []
    assert "relay-101-1" in cli("dns", "diff").stdout  # still queued


def test_changes_made_while_the_server_is_down_are_queued_and_sent_when_it_is_back(bind: tuple[Cli, Bind]) -> None:
    cli, server = bind
    cli("dns", "sync")
    server.stop()
    p = cli("route", "set", "myhost", "smtp", "relay-101-2")
    assert p.returncode == 0 and "dns: 1 change(s) PENDING" in p.stderr
    assert "smtp.myhost.example.net.internal." in cli("dns", "diff").stdout
    server.start()
    out = json.loads(cli("dns", "sync", "--json").stdout)
    assert len(out["applied"]) == 1 and out["error"] == ""
    assert server.query("smtp.myhost.example.net.internal.", "CNAME") == ["relay-101-2.rack-101.uc-inf.net.internal."]
    assert cli("dns", "diff").stdout.strip() == "nothing pending"


def test_bad_dns_input_is_refused_and_changes_nothing(example_store: Cli, tmp_path: Path) -> None:
    before = dump(example_store.store)
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("not a key\n")
    bad_key.chmod(0o640)  # the group may read it (named does, as group bind)
    open_key = tmp_path / "open.key"
    open_key.write_text("not a key either\n")
    open_key.chmod(0o644)
    for args, message in [
        (("dns", "configure", "--server", "127.0.0.1:53", "--key-file", str(open_key)),
         "the TSIG key is open to other users (mode 0644): chmod 600"),
        (("dns", "configure", "--server", "nowhere", "--key-file", str(bad_key)), "HOST:PORT"),
        (("dns", "configure", "--server", "127.0.0.1:53", "--key-file", str(bad_key)), "not a TSIG key file"),
        (("dns", "verify"), "no DNS server configured"),
        (("dns", "bind-config", str(tmp_path / "b"), "--listen", "localhost;evil"), "--listen must be IP addresses"),
    ]:
        p = example_store(*args, check=False)
        assert p.returncode == 2 and message in p.stderr and len(p.stderr.strip().splitlines()) == 1, (args, p.stderr)
    assert dump(example_store.store) == before


def test_records_already_there_as_wanted_are_adopted_not_conflicts(bind: tuple[Cli, Bind]) -> None:
    """A lost answer, or a second manager publishing the same DC: the records are
    there already, exactly as wanted, so they count as published."""
    cli, server = bind
    cli("dns", "sync")
    raw_sql(cli.store, "DELETE FROM dns_published")
    out = json.loads(cli("dns", "sync", "--json").stdout)
    assert out["conflicts"] == [] and out["error"] == "" and len(out["applied"]) > 20
    assert cli("dns", "diff").stdout.strip() == "nothing pending"


class Stepping:
    """The manager's DNS worker stepped as the daemon's loop steps it (on a thread
    of the test's, with the real background runner), leading, poked at will."""

    def __init__(self, store: Any) -> None:
        import threading

        from ctmanager.dnsroutes.worker import DnsWorker
        from ctmanager.manager.ports import ThreadRunner

        self.worker = DnsWorker(store, ThreadRunner(), verify_every=3600)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import time

        while not self.stopping.is_set():
            now = time.monotonic()
            self.worker.step(now, True)
            time.sleep(min(max(self.worker.due(now) - time.monotonic(), 0.0), 0.5))

    def __enter__(self) -> Stepping:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join(10)


def test_the_manager_s_dns_worker_retries_pending_changes_until_the_server_is_back(bind: tuple[Cli, Bind]) -> None:
    import time

    cli, server = bind
    cli("dns", "sync")
    server.stop()
    cli("route", "set", "myhost", "smtp", "relay-101-2")  # cannot publish: queued
    with Stepping(cli.store) as loop:
        worker = loop.worker
        worker.poke()
        deadline = time.monotonic() + 10
        while not worker._last_error:  # it tried, failed, and is backing off
            assert time.monotonic() < deadline, "the worker never tried"
            time.sleep(0.02)
        assert "Connection refused" in worker._last_error
        server.start()
        deadline = time.monotonic() + 10
        want = ["relay-101-2.rack-101.uc-inf.net.internal."]
        while server.query("smtp.myhost.example.net.internal.", "CNAME") != want:
            assert time.monotonic() < deadline, "the worker did not publish the queued change"
            time.sleep(0.05)
    assert cli("dns", "diff").stdout.strip() == "nothing pending"


def test_edits_while_the_manager_s_dns_worker_is_busy_are_each_published_once(bind: tuple[Cli, Bind]) -> None:
    """The manager's worker wakes on every configuration change, as a CLI edit
    publishes its own: one of them sends each change, never both (a second send
    fails its prerequisite and would be recorded as a conflict), and the CLI says
    so every time."""
    import threading
    import time

    cli, server = bind
    cli("dns", "sync")
    done = threading.Event()
    with Stepping(cli.store) as loop:
        def poke() -> None:  # as eager as a worker can be: awake the moment an edit commits
            while not done.is_set():
                loop.worker.poke()
                time.sleep(0.001)
        poker = threading.Thread(target=poke, daemon=True)
        poker.start()
        try:
            for target in ["relay-101-2", "relay-101", "relay-101-1", "relay-101"] * 3:
                p = cli("route", "set", "myhost", "smtp", target)
                assert "dns: published 1 change(s)" in p.stderr, p.stderr
                assert server.query("smtp.myhost.example.net.internal.", "CNAME") == \
                    [f"{target}.rack-101.uc-inf.net.internal."]
        finally:
            done.set()
            poker.join(10)
    out = json.loads(cli("dns", "diff", "--json").stdout)
    assert out == {"pending": [], "conflicts": [], "collisions": []}


def test_an_update_too_big_for_one_message_is_split(bind: tuple[Cli, Bind]) -> None:
    """1,000 changes with long unique names are about 190 KB: more than one DNS message
    (64 KB) can hold. The publisher halves the batch until each part fits."""
    from ctmanager.dnsroutes import publisher, records, sync
    from ctmanager.dnsroutes.records import Change, RRset
    from ctmanager.store import open_store, queries

    cli, server = bind
    with open_store(cli.store) as store:
        srv = sync.require_server(store)
        zones = records.zones(queries.dc_template(store))
    import hashlib

    # unique long labels: DNS name compression cannot shrink them
    names = [f"{hashlib.sha256(str(i).encode()).hexdigest()[:60]}.{hashlib.md5(str(i).encode()).hexdigest()}x"
             f".{zones.infra}" for i in range(1000)]
    out = publisher.publish(srv, zones, [Change(n, "A", None, RRset(n, "A", ("192.0.2.1",), 60)) for n in names])
    assert len(out.applied) == 1000 and out.conflicts == [] and out.messages >= 4
    assert server.query(names[0]) == ["192.0.2.1"] and server.query(names[-1]) == ["192.0.2.1"]
