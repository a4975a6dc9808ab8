"""Outbound SOCKS 5 through a real Dante (danted) with the rendered sockd.conf:
an app's CT may reach what its ACL allows, another app's CT may not."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from bindserver import free_port
from labrack import wait_for

from tests.conftest import Cli, dump

DANTED = shutil.which("danted") or "/usr/sbin/danted"


@pytest.fixture(autouse=True)
def needs_dante() -> None:
    if not Path(DANTED).exists():
        pytest.skip("needs Dante (bash scripts/setup.sh)")


def socks5_connect(proxy: int, source: str, dest: str, port: int) -> int:
    """A SOCKS 5 CONNECT from `source`; returns the reply code (0 = granted)."""
    s = socket.socket()
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(("127.0.0.1", proxy))
    s.sendall(b"\x05\x01\x00")
    assert s.recv(2) == b"\x05\x00"
    s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(dest) + struct.pack(">H", port))
    reply = s.recv(10)
    code = reply[1] if len(reply) > 1 else -1
    if code == 0:
        s.sendall(b"ping")
        assert s.recv(4) == b"pong"
    s.close()
    return code


@pytest.fixture
def dante(example_store: Cli, tmp_path: Path) -> Iterator[tuple[Cli, int, int]]:
    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen(8)
    target_port = target.getsockname()[1]

    def serve() -> None:
        while True:
            c, _ = target.accept()
            if c.recv(4) == b"ping":
                c.sendall(b"pong")
            c.close()

    threading.Thread(target=serve, daemon=True).start()
    proxy = free_port()
    example_store("socks", "allow", "jira", "127.0.0.1/32", "--port", str(target_port))
    conf = tmp_path / "sockd.conf"
    example_store("socks", "config", str(conf), "--listen", f"127.0.0.1:{proxy}", "--external", "127.0.0.1")
    assert subprocess.run([DANTED, "-V", "-f", str(conf)], capture_output=True).returncode == 0
    # acme (10.101.4.2) runs jira: its address stands in on loopback as 127.0.0.2
    conf.write_text(conf.read_text().replace("from: 10.101.4.2/32", "from: 127.0.0.2/32"))
    proc = subprocess.Popen([DANTED, "-f", str(conf), "-p", str(tmp_path / "danted.pid")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for("danted", lambda: _listening(proxy), timeout=20)
        yield example_store, proxy, target_port
    finally:
        proc.terminate()
        proc.wait(10)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_an_app_reaches_what_its_acl_allows_and_others_are_refused(dante: tuple[Cli, int, int]) -> None:
    cli, proxy, target = dante
    assert socks5_connect(proxy, "127.0.0.2", "127.0.0.1", target) == 0  # acme runs jira: allowed
    assert socks5_connect(proxy, "127.0.0.3", "127.0.0.1", target) == 2  # someone else: not allowed by ruleset
    assert socks5_connect(proxy, "127.0.0.2", "127.0.0.1", target + 1 if target < 65535 else 1) == 2  # other port


def test_bad_acls_are_refused_and_change_nothing(example_store: Cli) -> None:
    before = dump(example_store.store)
    for args, message in [(("socks", "allow", "ji ra", "10.0.0.0/8"), "app name"),
                          (("socks", "allow", "jira", "10.0.0.0/8;x"), "not an IP network"),
                          (("socks", "allow", "jira", "10.0.0.0/8", "--port", "70000"), "--port: must be from 0 to 65535"),
                          (("socks", "deny", "jira", "10.0.0.0/8"), "has no ACL")]:
        p = example_store(*args, check=False)
        assert p.returncode == 2 and message in p.stderr, (args, p.stderr)
    assert dump(example_store.store) == before
