"""A real BIND 9 (`named -g`) on a free loopback port, configured by
`ctmanager dns bind-config`, for the DNS integration tests and the benchmark."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import dns.resolver

NAMED = shutil.which("named") or "/usr/sbin/named"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Bind:
    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        log = open(self.folder / "named.log", "ab")
        self.proc = subprocess.Popen([NAMED, "-g", "-c", str(self.folder / "named.conf")], stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"named exited {self.proc.returncode}: {(self.folder / 'named.log').read_text()[-800:]}")
            try:
                self.query("uc-inf.net.internal.", "SOA")
                return
            except (OSError, dns.exception.DNSException):
                time.sleep(0.05)
        raise AssertionError("named did not answer in time")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        self.proc = None

    def query(self, name: str, rdtype: str = "A") -> list[str]:
        q = dns.message.make_query(name, rdtype)
        r = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=1.0)
        return sorted(rr.to_text() for rrset in r.answer for rr in rrset)

    def dig(self, name: str, *extra: str) -> str:
        return subprocess.run(["dig", "@127.0.0.1", "-p", str(self.port), "+short", name, *extra],
                              capture_output=True, text=True, timeout=10).stdout
