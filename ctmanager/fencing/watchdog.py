"""Petting a watchdog: /dev/watchdog in production, the lab's FIFO in the lab.

A Linux watchdog device resets the node when it is not written to for its
timeout, once opened. The agent never disarms it with the magic close ('V')
while a CT runs: an agent that stops with CTs running must take them down with
the node, or the manager would start them elsewhere while they still run.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import struct

log = logging.getLogger(__name__)
WDIOC_SETTIMEOUT = 0xC0045706  # _IOWR('W', 6, int)


class Watchdog:
    def __init__(self, device: str, timeout: float) -> None:
        self.device = device
        self.timeout = timeout
        self.fd: int | None = None
        self._complained = False

    def pet(self) -> bool:
        """Write one keep-alive; opens the device on first use (and again after the
        lab's watchdog process restarts). False when the watchdog cannot be reached."""
        if self.device == "none":
            return True
        try:
            if self.fd is None:
                self._open()
            assert self.fd is not None
            os.write(self.fd, b".")
            self._complained = False
            return True
        except OSError as exc:
            self.release()
            if not self._complained:  # once per outage: the log must not fill at 1 line/s
                self._complained = True
                log.error("cannot pet the watchdog %s: %s", self.device, exc.strerror or exc)
            return False

    def _open(self) -> None:
        # O_NONBLOCK: a FIFO without a reader fails at once (ENXIO) instead of hanging the agent.
        fd = os.open(self.device, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if stat.S_ISCHR(os.fstat(fd).st_mode):
                try:
                    fcntl.ioctl(fd, WDIOC_SETTIMEOUT, struct.pack("i", max(int(self.timeout), 1)))
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.ENOTTY):
                        raise
                    log.warning("%s does not take a timeout; it keeps its own", self.device)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def disarm(self) -> None:
        """Magic close: only when nothing runs here (a clean stop of an empty HN)."""
        if self.fd is not None:
            try:
                os.write(self.fd, b"V")
            except OSError:
                pass
        self.release()

    def release(self) -> None:
        """Close without disarming: an armed device keeps counting down."""
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None
