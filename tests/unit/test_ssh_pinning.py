"""Host keys are pinned: a real SSH handshake (a paramiko server on loopback)
with a key that is not in known_hosts, or another one than is pinned, is
refused in one line, told apart by type, never by the text of paramiko's
message."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from ctmanager.executor.ssh import HostKeyError, Remote, SshSettings


@pytest.fixture
def server() -> Iterator[tuple[int, paramiko.PKey]]:
    """An SSH server on loopback that completes the key exchange (and nothing more)."""
    key = paramiko.RSAKey.generate(2048)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve() -> None:
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        t = paramiko.Transport(conn)
        t.add_server_key(key)
        try:
            t.start_server(server=paramiko.ServerInterface())
        except (paramiko.SSHException, EOFError, OSError):
            pass
    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1], key
    srv.close()


def remote(tmp_path: Path, port: int, known: str) -> Remote:
    kh = tmp_path / "known_hosts"
    kh.write_text(known)
    client_key = tmp_path / "id"
    paramiko.RSAKey.generate(2048).write_private_key_file(str(client_key))
    return Remote("hn-101-9", "127.0.0.1", SshSettings("root", str(client_key), str(kh), port, 5.0))


def test_a_host_key_that_is_not_pinned_is_refused(tmp_path: Path, server: tuple[int, paramiko.PKey]) -> None:
    port, _ = server
    with pytest.raises(HostKeyError, match=r"^hn-101-9 \(127.0.0.1\): host key is not pinned in .*; refusing"):
        remote(tmp_path, port, "").run(["true"], b"", 5)


def test_another_host_key_than_the_pinned_one_is_refused(tmp_path: Path, server: tuple[int, paramiko.PKey]) -> None:
    port, _ = server
    other = paramiko.RSAKey.generate(2048)
    pinned = f"[127.0.0.1]:{port} ssh-rsa {other.get_base64()}\n"
    with pytest.raises(HostKeyError, match="host key CHANGED .*refusing to connect"):
        remote(tmp_path, port, pinned).run(["true"], b"", 5)
