"""ctmailmap's client connections: fair to each other, bounded, timed out, logged sparingly.

The daemon is one asyncio loop on one core, so no client may hold it:

- a connection is read at most `read_size` bytes at a time and answers at most
  `batch` requests per turn of the loop; the next `batch` of what it has
  waiting (it pipelines: Postfix never does) `pace` s later, so a flood gets a
  small share of the core, not all it leaves idle; while it has requests
  waiting it is not read, so what it may make the daemon hold is one read and
  one partial line (`max_line`);
- answers it does not read fill the kernel's buffers (its send buffer fixed at
  `sndbuf`, not grown), then up to `max_output` bytes in the daemon; past that
  it is dropped (Postfix waits for each answer: it never has more than one
  outstanding); a connection that sent `max_bad` bad requests is closed
  (Postfix sends none);
- a connection with no request for `idle_timeout` s is closed (Postfix
  reconnects at its next lookup, after a warning and a 1 s pause: hence a
  default over Postfix's max_idle); beyond `max_conns` connections new ones
  are closed at once;
- client trouble (bad and over-long requests, drops, refusals) is logged at
  most PER_CONN lines per connection (and why it was closed, if it was) and
  PER_MINUTE lines a minute in all, the rest as counts; client bytes only ever
  appear escaped (repr, first 64 bytes).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

log = logging.getLogger("ctmailmap")

BAD = b"500 bad request"  # an answer that starts so means client trouble: logged (rate-limited)
TOO_LONG = b"500 request too long\n"
INTERNAL = b"400 internal error\n"
PER_CONN = 3
PER_MINUTE = 10
SHOWN = 64  # bytes of a bad request shown (escaped) in the log


@dataclass(frozen=True)
class Limits:
    idle_timeout: float = 300.0  # over Postfix's max_idle (100 s): idle Postfix processes exit first
    max_conns: int = 16384
    max_line: int = 2048  # bytes of one request, without its newline
    max_output: int = 65536  # unread answers held in the daemon before the client is dropped
    sndbuf: int = 16384  # the kernel's send buffer of a connection (not left to grow to megabytes)
    read_size: int = 8192
    batch: int = 16  # requests answered per connection per turn of the loop
    pace: float = 0.001  # s between two batches of one connection's waiting requests (pipelined: 16,000/s at most)
    max_bad: int = 100  # bad requests a connection may send; then it is closed


def show(data: bytes) -> str:
    """Client bytes for the log: escaped, so nothing a client sends can split or forge a line."""
    return repr(data[:SHOWN]) + ("..." if len(data) > SHOWN else "")


class Throttle:
    """The log of client trouble: `per_conn` lines per connection and `per_minute`
    in all; what is left out is counted, per connection when it closes and in all
    at the end of the minute."""

    def __init__(self, per_conn: int = PER_CONN, per_minute: int = PER_MINUTE, window: float = 60.0) -> None:
        self.per_conn, self.per_minute, self.window = per_conn, per_minute, window
        self.window_end = 0.0
        self.lines = 0  # logged in this window
        self.hidden = 0  # not logged in this window
        self.flush: asyncio.TimerHandle | None = None

    def wants(self, conn: Conn) -> bool:
        """Whether a problem with `conn` may have a line (else it is counted, for when it closes)."""
        if conn.logged >= self.per_conn:
            conn.hidden += 1
            return False
        conn.logged += 1
        return True

    def note(self, msg: str, *args: object) -> None:
        self._line(1, msg, *args)

    def closed(self, conn: Conn) -> None:
        if conn.hidden:
            self._line(conn.hidden, "%s: %d more problems with this client not logged", conn.peer(), conn.hidden)

    def _line(self, count: int, msg: str, *args: object) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= self.window_end:
            self.window_end, self.lines = now + self.window, 0
        if self.lines < self.per_minute:
            self.lines += 1
            log.warning(msg, *args)
            return
        self.hidden += count
        if self.flush is None:
            self.flush = loop.call_at(self.window_end, self._flush)

    def _flush(self) -> None:
        self.flush = None
        if self.hidden:
            log.warning("%d more client problems not logged in the last %g s", self.hidden, self.window)
            self.hidden = 0


class Clients:
    """Every connection of one listener, and what they share."""

    def __init__(self, answer: Callable[[bytes], bytes], limits: Limits, throttle: Throttle | None = None) -> None:
        self.answer, self.limits = answer, limits
        self.throttle = throttle or Throttle()
        self.conns: set[Conn] = set()
        self.scratch = memoryview(bytearray(limits.read_size))  # every read lands here (one loop: one read at a time)

    def protocol(self) -> Conn:
        return Conn(self)


class Conn(asyncio.BufferedProtocol):
    __slots__ = ("clients", "transport", "pending", "last", "timer", "paused", "scheduled", "closed", "bad", "logged",
                 "hidden")

    def __init__(self, clients: Clients) -> None:
        self.clients = clients
        self.transport: asyncio.Transport | None = None
        self.pending = b""  # read, not answered yet
        self.last = 0.0  # loop time of the last request (or of the connection)
        self.timer: asyncio.TimerHandle | None = None
        self.paused = self.scheduled = self.closed = False
        self.bad = self.logged = self.hidden = 0

    def peer(self) -> str:
        addr = self.transport.get_extra_info("peername") if self.transport else None
        return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        c = self.clients
        if len(c.conns) >= c.limits.max_conns:
            self.closed = True
            c.throttle.note("refusing a connection from %s: %d open already (--max-conns)", self.peer(),
                            len(c.conns))
            self.transport.abort()
            return
        c.conns.add(self)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, c.limits.sndbuf)
        loop = asyncio.get_running_loop()
        self.last = loop.time()
        self.timer = loop.call_at(self.last + c.limits.idle_timeout, self._idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pending = b""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self in self.clients.conns:
            self.clients.conns.discard(self)
            self.clients.throttle.closed(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.clients.scratch

    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(self.clients.scratch[:nbytes])
        self.pending = self.pending + data if self.pending else data
        if not self.scheduled:
            self._work()

    def eof_received(self) -> bool:
        return False  # what came before is answered (nothing waits while we read): close

    def _work(self) -> None:
        """Answer up to `batch` requests; if more are waiting, stop reading and come back `pace` s later."""
        self.scheduled = False
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            return
        limits, data, pos = self.clients.limits, self.pending, 0
        out: list[bytes] = []
        for _ in range(limits.batch):
            end = data.find(b"\n", pos)
            if end < 0:
                break
            if end - pos > limits.max_line:
                return self._close([*out, TOO_LONG], "request too long (over %d bytes): %s", limits.max_line,
                                   show(data[pos:end]))
            out.append(self._answer(data[pos:end + 1]))
            pos = end + 1
            if self.bad >= limits.max_bad:
                return self._close(out, "closed after %d bad requests", self.bad)
        if pos:
            self.pending = data = data[pos:]
            self.last = asyncio.get_running_loop().time()
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
            if transport.get_write_buffer_size() > limits.max_output:
                return self._drop()
            if transport.is_closing():
                return  # the write failed: the connection is lost
        if b"\n" in data:
            if not self.paused:
                transport.pause_reading()
                self.paused = True
            self.scheduled = True
            asyncio.get_running_loop().call_later(limits.pace, self._work)
        elif len(data) > limits.max_line:
            self._close([TOO_LONG], "request too long (over %d bytes): %s", limits.max_line, show(data))
        elif self.paused:
            self.paused = False
            transport.resume_reading()

    def _answer(self, line: bytes) -> bytes:
        throttle = self.clients.throttle
        try:
            reply = self.clients.answer(line)
        except Exception as exc:  # noqa: BLE001 - a bug must cost one answer, not the connection or the log
            if throttle.wants(self):
                throttle.note("%s: internal error on %s: %r", self.peer(), show(line), exc)
            return INTERNAL
        if reply.startswith(BAD):
            self.bad += 1
            if throttle.wants(self):
                throttle.note("%s: bad request %s", self.peer(), show(line))
        return reply

    def _close(self, out: list[bytes], why: str, *args: object) -> None:
        """The last answers, then close (a client that does not take them goes at its idle timeout)."""
        assert self.transport is not None
        self.clients.throttle.note("%s: " + why, self.peer(), *args)  # a connection's last line: always wanted
        self.closed = True
        self.pending = b""
        self.transport.write(b"".join(out))
        self.transport.close()

    def _drop(self) -> None:
        assert self.transport is not None
        self.clients.throttle.note("%s: dropped: %d bytes of answers not read", self.peer(),
                                   self.transport.get_write_buffer_size())
        self.closed = True
        self.transport.abort()

    def _idle(self) -> None:
        self.timer = None
        if self.transport is None:
            return
        loop = asyncio.get_running_loop()
        due = self.last + self.clients.limits.idle_timeout
        if not self.closed and loop.time() < due:
            self.timer = loop.call_at(due, self._idle)
            return
        self.closed = True
        self.transport.abort()  # idle (or closed, its last answers still not taken): let it go
