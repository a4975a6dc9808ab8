"""Entry point: argument parsing, store location, one-line errors, exit codes.

Every command lives in one module per object or area (dc, rack, tenant, ct,
route, hn, loop, dns, metrics, mail, edge, socks, peering, lab, sim), each with a
`register(reg)`. Exit codes: 0 ok, 2 bad input (nothing changed), 1
environment/store problem. Heavy modules (jinja2, the renderer) are imported by
the commands that use them, so `status` on 10,000 CTs stays fast.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from collections.abc import Sequence

from .. import add_version_flag
from ..errors import CtmError
from . import (
    backup,
    ct,
    dc,
    dns,
    edge,
    hn,
    lab,
    loop,
    mail,
    manager,
    metrics,
    move,
    peering,
    rack,
    route,
    sim,
    socks,
    store,
    tenant,
)
from .common import Registry

PROG = "ctmanager"
BAD_PATH = {errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.EINVAL}
STORE_HELP = ("the store: an SQLite file or a postgresql:// URL (default: $CTMANAGER_STORE, else "
              "/var/lib/ctmanager/ctmanager.db)")


_json_errors = False  # --json was given: errors are {"error": "..."} too (set before parsing: usage errors)


def fail(message: str, prog: str = PROG) -> None:
    """The CLI's one way to say what went wrong: one line on stderr, plain text,
    or a JSON object under --json (scripts parse stderr as they parse stdout)."""
    if _json_errors:
        sys.stderr.write(json.dumps({"error": message}) + "\n")
    else:
        sys.stderr.write(f"{prog}: error: {message}\n")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus the exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        fail(f"{message} (see: {self.prog} --help)", self.prog)
        sys.exit(2)


def build_parser() -> Parser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", default=argparse.SUPPRESS, metavar="PATH", help=STORE_HELP)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts")
    top = Parser(
        prog=PROG,
        description="Container-platform manager for templated racks: DC template, racks, tenants, CTs, routes, rendered configs.",
        epilog="example: ctmanager --store /tmp/dc1.db init example && ctmanager --store /tmp/dc1.db status",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--store", default=None, metavar="PATH", help=STORE_HELP)
    top.add_argument("--json", action="store_true", default=False, help="print JSON for scripts")
    add_version_flag(top)
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    reg = Registry(sub, common)
    dc.register(reg)
    for module in (rack, tenant, move, ct, route):
        module.register(reg)
    dc.register_views(reg)
    for module in (loop, manager, hn, lab, sim, dns, metrics, mail, edge, socks, peering, store, backup):
        module.register(reg)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    global _json_errors
    words = list(sys.argv[1:] if argv is None else argv)
    # --json among the options (not in a command after --, e.g. ct exec's)
    _json_errors = "--json" in (words[:words.index("--")] if "--" in words else words)
    parser = build_parser()
    args = parser.parse_args(words)
    try:
        return int(args.func(args) or 0)
    except CtmError as exc:
        fail(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        fail("interrupted")
        return 130
    except BrokenPipeError:  # `ctmanager status | head`
        return 0
    except OSError as exc:
        # A path the command was given that the OS refuses (too long, a loop, not a
        # folder) is bad input; anything else is this machine's trouble. One line either way.
        name = "" if exc.filename is None else str(exc.filename).encode("unicode_escape").decode("ascii")[:200]
        fail(f"{name + ': ' if name else ''}{exc.strerror or exc}")
        return 2 if exc.errno in BAD_PATH else 1


if __name__ == "__main__":
    sys.exit(main())
