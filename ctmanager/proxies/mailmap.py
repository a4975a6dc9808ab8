"""`ctmailmap`: the edge mail routers' Postfix lookup daemon (tcp_table protocol).

Postfix asks `get KEY\\n` (KEY %XX-encoded) on a persistent connection and reads
`200 VALUE` (found), `500 REASON` (not found) or `400 REASON` (try again later).
One table answers all the rendered main.cf points at:

  jira@myhost.example.net   200 lmtp:inet:mailstore.myhost.example.net.internal:24
                            (a mailbox: one of the tenant's apps)
  bob@myhost.example.net    200 discard:          (a known tenant, no such mailbox)
  myhost.example.net        200 lmtp:inet:…:24    (relay_domains: the tenant's domain
                                                   is ours; transport's domain step)
  anything else             500 not found

Answers come from an in-memory index of the store, rebuilt when the store
changes (checked every 0.25 s with one cheap query, never per lookup). A store
that cannot be read gives 400 until it can. Lines are limited to 2,048 bytes
(a longer one: 500, and the connection is closed); garbage gets a 500 and the
connection carries on, up to 100 bad requests. Nothing a client sends can stop
the daemon or delay the other clients' answers (mailconn): at most 16 answers
per connection per turn of the loop, pipelined requests 16 a millisecond; a
client that does not read its answers is dropped past 64 KiB of them; idle
connections are closed after --idle-timeout, at most --max-conns are open;
client trouble is logged at most 3 lines per connection and 10 a minute in
all, then counted, client bytes escaped.

Under systemd (proxies/ctmailmap.service, Type=notify) it says READY once it
listens, and WATCHDOG=1 from the event loop that answers the lookups (`keepalive`):
a blocked loop stops the pings and systemd restarts it. The store is read in
threads, so a store that hangs costs fresh answers (400s), never a restart, which
would only lose the index it still answers from.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from .. import add_version_flag, daemonlog
from .. import validate as v
from ..errors import InputError, StoreError
from ..sdnotify import Notifier
from ..store.db import Locator, default_path, is_url, redact
from ..store.watch import POLL, open_watch
from ..validate import hostport
from .mailconn import BAD, Clients, Limits

log = logging.getLogger("ctmailmap")
_KEY = re.compile(r"[a-z0-9._+=-]{1,128}(@[a-z0-9.-]{1,253})?|[a-z0-9.-]{1,253}")


@dataclass(frozen=True)
class Index:
    zone: str  # the tenant zone, e.g. example.net
    tenants: dict[str, frozenset[str]]  # tenant -> its mailboxes (its apps)

    def lookup(self, key: str) -> tuple[int, str]:
        key = key.strip().lower()
        if not _KEY.fullmatch(key):
            return 500, "not found"
        local, at, domain = key.rpartition("@")
        tenant = self._tenant(domain)
        if tenant is None:
            return 500, "not found"
        if at and local not in self.tenants[tenant]:
            return 200, "discard:"  # the talk's rule: a known tenant's unknown mailbox is dropped quietly
        return 200, f"lmtp:inet:mailstore.{tenant}.{self.zone}.internal:24"

    def _tenant(self, domain: str) -> str | None:
        suffix = "." + self.zone
        if not domain.endswith(suffix):
            return None
        name = domain[: -len(suffix)]
        return name if name in self.tenants else None


def build_index(store_path: Locator) -> Index:
    from ..store import open_store, queries

    with open_store(store_path) as store:
        dc = queries.dc_template(store)
        tenants = {t["name"]: frozenset(t["apps"]) for t in queries.tenants(store)}
    return Index(dc.tenant_zone, tenants)


@functools.lru_cache(maxsize=4096)  # replies are few (one per tenant): encoded once, not char by char per lookup
def encode(value: str) -> str:
    """tcp_table's %XX encoding of a reply: spaces, controls, '%' and non-ASCII."""
    return "".join(c if 32 < ord(c) < 127 and c != "%" else "".join(f"%{b:02X}" for b in c.encode()) for c in value)


UNAVAILABLE = b"400 store unavailable, try again later\n"


class MailMap:
    def __init__(self, store_path: Locator) -> None:
        self.store_path = store_path
        self.index: Index | None = None
        self.version: int | None = None
        self.lookups = 0
        self.error = ""

    def refresh(self) -> None:
        try:
            index = build_index(self.store_path)
        except Exception as exc:  # noqa: BLE001 - any store trouble is a temporary failure to clients
            if not self.error:
                log.error("cannot read the store %s: %s; answering 400", redact(self.store_path), exc)
            self.error = str(exc) or type(exc).__name__
            self.index = None
            return
        if self.error:
            log.info("the store is readable again")
        self.index, self.error = index, ""
        log.info("index rebuilt: %d tenants", len(index.tenants))

    def answer(self, line: bytes) -> bytes:
        try:
            text = line.decode("ascii").rstrip("\r\n")
        except UnicodeDecodeError:
            return BAD + b"\n"
        verb, _, key = text.partition(" ")
        if verb != "get" or not key:
            return BAD + b": expected 'get KEY'\n"
        if self.index is None:
            # the reason (which names the store's path, maybe its host) is in our log, not
            # sent to clients: anyone who may connect would learn where the store lives
            return UNAVAILABLE
        self.lookups += 1
        code, value = self.index.lookup(unquote(key))
        return f"{code} {encode(value) if code == 200 else value}\n".encode()

    async def watch(self) -> None:
        """Rebuild the index when the configuration changed (or the store file was replaced)."""
        watch = open_watch(self.store_path)
        seen = None
        delay = POLL  # a cheap check: an edit is answered within POLL s
        while True:
            try:  # in a thread: a slow or vanished store must not stall the lookups
                token = await asyncio.to_thread(watch.token)
                if token != seen or self.index is None:
                    seen = token
                    await asyncio.to_thread(self.refresh)
                delay = POLL if self.index is not None else min(delay * 2, MAX_BACKOFF)
            except StoreError as exc:
                if not self.error:
                    log.error("cannot read the store: %s; answering 400, retrying with backoff", exc)
                self.index, self.error = None, str(exc)
                delay = min(delay * 2, MAX_BACKOFF)  # a store that is away is not asked 20 times a second
            await asyncio.sleep(delay)


MAX_BACKOFF = 5.0  # s between tries while the store is away


async def keepalive(notifier: Notifier) -> None:
    """WATCHDOG=1 every half WatchdogSec, from the loop itself (a coroutine on it, not a thread)."""
    while notifier.watchdog:
        notifier.alive()
        await asyncio.sleep(notifier.interval)


async def serve(store_path: Locator, host: str, port: int, limits: Limits | None = None,
                notifier: Notifier | None = None) -> None:
    limits, notifier = limits or Limits(), notifier or Notifier()
    mm = MailMap(store_path)
    mm.refresh()
    clients = Clients(mm.answer, limits)
    server = await asyncio.get_running_loop().create_server(clients.protocol, host, port, backlog=4096)
    log.info("ctmailmap on %s:%d, store %s; at most %d connections, idle ones closed after %g s", host, port,
             redact(store_path), limits.max_conns, limits.idle_timeout)
    notifier.ready(f"listening on {host}:{port}; " + (f"{len(mm.index.tenants)} tenants" if mm.index else
                                                        "the store is unreadable: answering 400"))
    async with server:
        await asyncio.gather(server.serve_forever(), mm.watch(), keepalive(notifier))


def _raise_fd_limit() -> int:
    """Every Postfix process may hold a connection: allow as many as the system lets us; how many."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="ctmailmap", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version_flag(ap)
    ap.add_argument("--store", required=True, help="the ctmanager store: an SQLite file or a postgresql:// URL")
    ap.add_argument("--listen", default="127.0.0.1:10027", help="HOST:PORT (default 127.0.0.1:10027)")
    ap.add_argument("--idle-timeout", type=v.seconds_arg(0.001, 10**8), default=Limits.idle_timeout, metavar="SECONDS",
                    help=f"close a connection that sent no request for this long; Postfix reconnects "
                         f"(default {Limits.idle_timeout:g})")
    ap.add_argument("--max-conns", type=v.int_arg(1, 10**7), default=Limits.max_conns, metavar="N",
                    help=f"connections at once; more are closed at once, and logged (default {Limits.max_conns}; "
                         f"never more than the open-file limit allows)")
    args = ap.parse_args(argv)
    daemonlog.setup("ctmailmap")
    notifier = Notifier.from_env()
    try:
        host, port = hostport(args.listen, "--listen", names=True)
    except InputError as exc:
        ap.error(str(exc))
    try:
        store = default_path(args.store)
    except InputError as exc:
        ap.error(str(exc))
    if not is_url(store) and not Path(store).is_file():
        ap.error(f"--store: no store at {redact(store)}")
    files = _raise_fd_limit() - 64  # the store, the listener, the log: room for them
    if args.max_conns > files:
        log.warning("--max-conns %d is more than the open-file limit allows: at most %d", args.max_conns, files)
    limits = Limits(idle_timeout=args.idle_timeout, max_conns=max(1, min(args.max_conns, files)))
    try:
        asyncio.run(serve(store, host, int(port), limits, notifier))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        sys.stderr.write(f"ctmailmap: cannot listen on {args.listen}: {exc.strerror}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
