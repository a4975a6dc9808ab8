"""sd_notify(3) for the daemons, without libsystemd: readiness, status, stopping and
the service watchdog's keep-alive, as datagrams to $NOTIFY_SOCKET.

Under a unit with `Type=notify` systemd sets NOTIFY_SOCKET (a path, or `@name` for
an abstract socket) and, with `WatchdogSec=`, WATCHDOG_USEC (and WATCHDOG_PID: the
watchdog is only ours when it names this process). Outside systemd (a shell, the
lab, the tests, daemontools) every call is a no-op.

How the daemons use it, and why:

- `ready()` once the daemon really serves (the manager's loop ran its first step on
  an open store; ctagent sent its first report; ctmailmap listens; ctbackup
  watches): `systemctl start` returns then, and units ordered after it start then;
- `alive()` from the daemon's own loop, once per turn: it sends WATCHDOG=1 when half
  of WatchdogSec has passed since the last one. Never from a thread of its own: a
  loop that is stuck must stop the pings, so that systemd restarts the daemon;
- `stopping()` when it begins a clean stop.

The variables are taken out of the environment when read (as sd_notify's
unset_environment does): the programs a daemon starts (lxc-start, borg, ssh, the
fence command) must not talk to the daemon's service manager, nor think they are
watched.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, MutableMapping

from .validate import is_digits

log = logging.getLogger(__name__)
VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
SEND_TIMEOUT = 1.0  # s: systemd reads its socket at once; a notification never holds a loop for longer


class Notifier:
    """One daemon's notifications. `address`: NOTIFY_SOCKET (None: not under systemd);
    `watchdog_usec`: WATCHDOG_USEC (0: no service watchdog)."""

    def __init__(self, address: str | None = None, watchdog_usec: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.address = address if address and address[0] in "/@" else None  # (vsock: not in systemd 252)
        self.watchdog = watchdog_usec / 1e6 if self.address and watchdog_usec > 0 else 0.0  # WatchdogSec, s
        self.interval = self.watchdog / 2  # s between two WATCHDOG=1, as sd_watchdog_enabled(3) advises
        self.clock = clock
        self.is_ready = False
        self.last_ping: float | None = None
        self._sock: socket.socket | None = None
        self._complained = False

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True) -> Notifier:
        """The notifier systemd set up for this process (a no-op one outside systemd)."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        ours = not pid or pid == str(os.getpid())
        watchdog = int(usec) if is_digits(usec) and ours else 0
        if unset:
            for name in VARIABLES:
                env.pop(name, None)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """One notification (fields like READY=1, STATUS=…); False when it did not go."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address[0] == "@" else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(SEND_TIMEOUT)
            self._sock.sendto("\n".join(fields).encode(), target)
        except OSError as exc:
            if not self._complained:  # once until one goes again: a lost socket must not fill the log
                self._complained = True
                log.warning("cannot notify systemd at %s: %s", self.address, exc.strerror or exc)
            return False
        self._complained = False
        return True

    def ready(self, status: str = "") -> None:
        """READY=1 (with STATUS=), the first time only; later calls do nothing."""
        if self.is_ready:
            return
        self.is_ready = True
        self.send("READY=1", *((f"STATUS={_one_line(status)}",) if status else ()))

    def status(self, text: str) -> None:
        self.send(f"STATUS={_one_line(text)}")

    def alive(self) -> bool:
        """The loop made progress: WATCHDOG=1 if half of WatchdogSec has passed since
        the last one (or none was sent yet). Whether one was sent."""
        if not self.watchdog:
            return False
        now = self.clock()
        if self.last_ping is not None and now - self.last_ping < self.interval:
            return False
        self.last_ping = now
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "") -> None:
        self.send("STOPPING=1", *((f"STATUS={_one_line(status)}",) if status else ()))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]
