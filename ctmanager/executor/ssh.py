"""SSH to the HNs: fabric connections with pinned host keys and hard timeouts.

Fabric's Connection sets paramiko's AutoAddPolicy when it is built, and loads the
user's ssh_config; both are undone here: only the manager's own known_hosts
counts, and an unknown or changed host key is refused (HostKeyError, never
retried). Commands run on a session channel with one deadline for the whole
exchange (fabric's runner threads have no join timeout).
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import CtmError

if TYPE_CHECKING:  # paramiko and fabric (with invoke, asyncio, unittest.mock) cost ~0.1 s to import:
    import paramiko  # loaded on the first connection, not by everything that names SshSettings
    from fabric import Connection

# paramiko logs every failed handshake with a traceback; we report each failure
# as one typed error line instead.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)


class SshError(CtmError):
    """Could not run the command (connection, auth). Temporary: retried next cycle."""

    temporary = True


class HostKeyError(SshError):
    """The HN's host key is not the pinned one (or none is pinned). Permanent."""

    temporary = False


class SshTimeout(SshError):
    pass


class NotPinned(Exception):
    """The server's host key is not in known_hosts (our own policy raises it: no
    decision rests on the text of paramiko's message)."""


def refuse_unpinned() -> paramiko.MissingHostKeyPolicy:
    """paramiko's policy for a host key that is not pinned: refuse, typed."""
    import paramiko

    class Refuse(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
            raise NotPinned(hostname)

    return Refuse()


@dataclass(frozen=True)
class SshSettings:
    user: str
    key_file: str
    known_hosts: str
    port: int = 22
    connect_timeout: float = 5.0


@dataclass(frozen=True)
class Output:
    rc: int
    out: bytes
    err: bytes


class Remote:
    """One HN's connection, opened on first use and reused (an SSH handshake
    costs more than most actions); dropped on any error and reopened next time."""

    def __init__(self, name: str, address: str, settings: SshSettings) -> None:
        self.name = name
        self.address = address
        self.settings = settings
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def _connect(self) -> paramiko.Transport:
        import paramiko
        from fabric import Config, Connection

        if self._conn is not None:
            transport: paramiko.Transport | None = self._conn.client.get_transport()
            if transport is not None and transport.is_active():
                return transport
            self.close()
        s = self.settings
        conn = Connection(
            self.address, user=s.user, port=s.port, config=Config(overrides={"load_ssh_configs": False}),
            connect_timeout=max(1, int(s.connect_timeout)),
            connect_kwargs={"key_filename": [s.key_file], "look_for_keys": False, "allow_agent": False,
                            "banner_timeout": s.connect_timeout, "auth_timeout": s.connect_timeout},
        )
        client = conn.client
        client.set_missing_host_key_policy(refuse_unpinned())
        client.get_host_keys().clear()
        try:
            client.load_host_keys(s.known_hosts)
        except OSError as exc:
            raise HostKeyError(f"{self.name}: cannot read known_hosts {s.known_hosts}: {exc.strerror}") from None
        try:
            conn.open()
        except paramiko.BadHostKeyException as exc:
            raise HostKeyError(f"{self.name} ({self.address}): host key CHANGED (got {exc.key.get_fingerprint().hex()}, "
                               f"pinned in {s.known_hosts}); refusing to connect") from None
        except NotPinned:
            raise HostKeyError(f"{self.name} ({self.address}): host key is not pinned in {s.known_hosts}; "
                               "refusing to connect") from None
        except paramiko.SSHException as exc:
            raise SshError(f"{self.name} ({self.address}): ssh: {exc}") from None
        except TimeoutError:
            raise SshTimeout(f"{self.name} ({self.address}): ssh connect timed out after {s.connect_timeout:g} s") from None
        except OSError as exc:
            raise SshError(f"{self.name} ({self.address}): ssh: {exc.strerror or exc}") from None
        self._conn = conn
        fresh: paramiko.Transport | None = conn.client.get_transport()
        assert fresh is not None
        if isinstance(fresh.sock, socket.socket):  # (a proxied transport's channel has no Nagle to turn off)
            # Each command is a few small messages each way: without this, Nagle's algorithm against the server's
            # delayed ACK holds one of them ~40 ms (measured: exec of `true` 47 ms median, 2 ms with it).
            with contextlib.suppress(OSError):
                fresh.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return fresh

    def run(self, argv: list[str], stdin: bytes = b"", timeout: float = 30.0) -> Output:
        """Run a command (an argument list, quoted here) with one overall deadline."""
        import paramiko

        deadline = time.monotonic() + timeout
        with self._lock:
            transport = self._connect()
        try:
            chan = transport.open_session(timeout=max(deadline - time.monotonic(), 0.1))
            chan.settimeout(0.2)
            chan.exec_command(shlex.join(argv))
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            while True:
                if time.monotonic() > deadline:
                    chan.close()
                    self.close()
                    raise SshTimeout(f"{self.name}: {argv[0]} {' '.join(argv[1:3])}... timed out after {timeout:g} s")
                got = False
                if chan.recv_ready():
                    out += chan.recv(65536)
                    got = True
                if chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    got = True
                if not got:
                    if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                        break
                    chan.status_event.wait(0.005)
            rc = chan.recv_exit_status()
            chan.close()
            return Output(rc, bytes(out), bytes(err))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            raise SshError(f"{self.name}: ssh: {exc}") from None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing a dead connection must not hide the real error
                pass
            self._conn = None
