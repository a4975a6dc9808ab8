"""The real transport of state reports (ARCHITECTURE.md, "Wire formats"): signed
datagrams over UDP. The manager and the agents use it; the simulator replaces it."""

from __future__ import annotations

import logging
import select
import socket
from collections.abc import Sequence

from .keys import Keyring
from .reports import Receiver, Report, ReportError, sign

log = logging.getLogger(__name__)
MAX_BATCH = 512  # datagrams taken per call, so a flood cannot starve the loop


class UdpTransport:
    """Signed state reports over UDP, one non-blocking socket: the manager's
    heartbeats and the agents' reports (receivers verify with the rack key)."""

    def __init__(self, listen: tuple[str, int], key: bytes | Keyring) -> None:
        self.key = key
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(listen)
        self.sock.setblocking(False)
        self._send_errors: set[str] = set()

    def receive(self, receiver: Receiver, now: float) -> list[Report]:
        out = []
        for _ in range(MAX_BATCH):
            try:
                data, addr = self.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            report = receiver.receive(data, addr[0], now)
            if report is not None:
                out.append(report)
        return out

    def send(self, report: Report, to: Sequence[tuple[str, int]]) -> None:
        try:
            datagram = sign(report, self.key)
        except ReportError as exc:
            log.error("cannot send a report: %s", exc)
            return
        for addr in to:
            try:
                self.sock.sendto(datagram, addr)
            except OSError as exc:
                key = f"{addr[0]}: {exc.strerror}"
                if key not in self._send_errors:  # once per destination and error
                    self._send_errors.add(key)
                    log.warning("cannot send reports to %s:%d: %s", addr[0], addr[1], exc.strerror)

    def wait(self, timeout: float, also: Sequence[int] = ()) -> None:
        """Block until a datagram arrives, one of `also` is readable, or `timeout` s passed."""
        self.wait_any(timeout, also)

    def wait_any(self, timeout: float, also: Sequence[int]) -> list[int]:
        """Like wait, and also wake when one of the file descriptors `also` is
        readable (an agent's runtime events); returns the ready ones of `also`.
        poll, not select: a descriptor numbered past 1023 is fine (a busy process)."""
        poller = select.poll()
        for fd in (self.sock.fileno(), *also):
            poller.register(fd, select.POLLIN)
        ready = poller.poll(max(timeout, 0.0) * 1000.0)
        return [fd for fd, _ in ready if fd in also]

    def close(self) -> None:
        self.sock.close()
