"""What every CLI module shares: the command registry (help with an example on
every command), the store of a command, one edit transaction with its DNS
publish, and the argument parsers used by several objects."""

from __future__ import annotations

import argparse
import contextlib
import sys
import unicodedata
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .. import validate as v
from ..errors import CtmError, NotFoundError
from ..store import Store, default_path, open_store, queries
from ..store import dns as dnsrows

if TYPE_CHECKING:
    from ..operations.inventory import Inventory

DNS_LOCK_WAIT = 3.0  # seconds an edit waits for the DNS publisher's lock
RES_OPTS = ("memory", "swap", "disk", "cpus", "cpuunits", "cpulimit")
Handler = Callable[[argparse.Namespace], int]


class Registry:
    """Adds commands and groups to the top parser. Groups are kept by name, so a
    second module may add actions to one (`ct move` lives beside `ct add`)."""

    def __init__(self, sub: Any, common: argparse.ArgumentParser) -> None:
        self.sub, self.common = sub, common
        self.groups: dict[str, Any] = {}
        self._group_parsers: dict[int, argparse.ArgumentParser] = {}  # id(sub-commands) -> the group's parser

    def cmd(self, parent: Any, name: str, func: Handler, help: str, example: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            name, parents=[self.common], help=help, description=help, epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        group = self._group_parsers.get(id(parent))
        if group is not None and group.epilog is None:  # `ctmanager ct --help` shows an example too: its first
            group.epilog = f"example:\n  {example}"
        return p

    def group(self, name: str, help: str, parent: Any = None) -> Any:
        """A command with sub-commands; nested under `parent` (a group) if given.
        Its --help ends with the example of its first command."""
        p = (parent or self.sub).add_parser(name, help=help, description=help,
                                            formatter_class=argparse.RawDescriptionHelpFormatter)
        dest = "action" if parent is None else f"{name}_command"
        g = p.add_subparsers(dest=dest, metavar="ACTION", parser_class=type(p))
        g.required = True
        self._group_parsers[id(g)] = p
        if parent is None:
            self.groups[name] = g
        return g


def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--config", metavar="FILE", help="manager config (default: $CTMANAGER_CONFIG)")
    return p


def want_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def store_of(args: argparse.Namespace) -> Store:
    return open_store(default_path(getattr(args, "store", None)))


@contextlib.contextmanager
def editing(args: argparse.Namespace) -> Iterator[tuple[Store, Inventory]]:
    """Store + Inventory inside one write transaction, then the DNS publish."""
    from ..operations.inventory import Inventory
    with store_of(args) as store:
        dc = queries.dc_template(store)
        # The publisher's lock from before the commit to after the publish, so the
        # manager's DNS worker cannot send this edit's changes first (the user would
        # not hear that they were published). Only waited for briefly: a worker
        # sending to a dead server must not hold up an edit; it sends this one next.
        with store.lock(dnsrows.LOCK, wait=DNS_LOCK_WAIT) as held:
            with store.transaction():
                yield store, Inventory(store, dc)
            if held:
                publish_dns(store)
            else:
                sys.stderr.write("dns: another ctmanager is publishing right now; this change stays pending "
                                 "until the next sync (the manager's DNS worker, or: ctmanager dns sync)\n")


def publish_dns(store: Store) -> None:
    """Every edit publishes its DNS changes at once, if a DNS server is configured;
    if it cannot be reached they stay queued in the store (nothing is lost)."""
    from ..dnsroutes import sync

    try:
        server = sync.server_of(store, timeout=2.0)
    except CtmError as exc:
        sys.stderr.write(f"dns: not published: {exc}\n")
        return
    if server is None:
        return
    report = sync.sync(store, server)
    if report.applied:
        sys.stderr.write(f"dns: published {len(report.applied)} change(s) to {server.host}:{server.port}\n")
    for _change, why in report.conflicts:
        sys.stderr.write(f"dns: CONFLICT {why}\n")
    for why in report.collisions:
        sys.stderr.write(f"dns: COLLISION {why} (left out)\n")
    if report.error:
        sys.stderr.write(f"dns: {len(report.pending)} change(s) PENDING ({report.error}); "
                         "sent when the server answers (ctmanager dns sync)\n")


def manager_setup(args: argparse.Namespace) -> tuple[Any, Store, Any]:
    """The manager config (--config / $CTMANAGER_CONFIG), the store and the DC."""
    from ..manager import config as mconfig

    config = mconfig.load(mconfig.find(getattr(args, "config", None)))
    store = store_of(args)
    dc = queries.dc_template(store)
    installed = [r["slot"] for r in queries.racks(store)]
    if config.slot not in installed:
        store.close()
        racks = ", ".join(f"rack-{s}" for s in installed) or "none yet (ctmanager rack install)"
        raise NotFoundError(f"rack-{config.slot} (the manager config's rack) is not installed in this store; "
                            f"installed: {racks}")
    return config, store, dc


def parse_rack(text: str, field: str = "rack") -> int:
    from ..dc.model import parse_rack as parse

    return parse(text, field)


def installed_rack(store: Store, text: str, field: str = "--rack") -> int:
    """A rack filter (`ct list --rack`, `hn list --rack`): a rack that is not
    installed is an error, not an empty list that reads as "no CTs there"."""
    slot = parse_rack(text, field)
    if not queries.rack_installed(store, slot):
        raise NotFoundError(f"no rack-{slot} installed (ctmanager rack list)", where=field)
    return slot


integer_in, seconds_in = v.int_arg, v.seconds_arg  # bounded argparse types (ctmanager.validate)
integer = integer_in(-(2**63), 2**63 - 1)
positive = integer_in(1, 2**31 - 1)
port = integer_in(1, 65535)


def out_path(text: str) -> str:
    """An output path (`… config OUT`, `render OUTDIR`): printed back, logged and often
    quoted into the files written, so a control character (a newline, an escape, a
    bidi override, an undecodable byte) is refused here, in one line, before any write."""
    if not text:
        raise argparse.ArgumentTypeError("must be a path (got an empty one)")
    if any(unicodedata.category(c)[0] == "C" or c in "\u2028\u2029" for c in text):
        raise argparse.ArgumentTypeError(f"must be a path without control characters (got {ascii(text)[:200]})")
    return text


def resource_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory", help="RAM, e.g. 4G")
    p.add_argument("--swap", help="swap, e.g. 1G")
    p.add_argument("--disk", help="/data quota, e.g. 50G")
    p.add_argument("--cpus", help="CPU count")
    p.add_argument("--cpuunits", help="CPU weight (OpenVZ CPUUNITS / cgroup shares)")
    p.add_argument("--cpulimit", help="CPU limit in percent of one CPU (default: cpus x 100)")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in RES_OPTS if getattr(args, k, None) is not None}


def app_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [a.strip() for a in text.split(",") if a.strip()]
