"""`ctmanager store copy SRC DST`: the store itself (SQLite file or PostgreSQL)."""

from __future__ import annotations

import argparse
import sys

from ..store import copy as storecopy
from ..store.db import parse_locator, redact
from .common import Registry, want_json
from .output import emit_json


def register(reg: Registry) -> None:
    g = reg.group("store", "the store itself: an SQLite file or a PostgreSQL database")
    p = reg.cmd(g, "copy", cmd_store_copy, "copy a whole store into a new one, either backend (ids kept)",
                "ctmanager store copy /var/lib/ctmanager/ctmanager.db 'postgresql://ctm@db1/ctmanager'")
    p.add_argument("src", metavar="SRC", help="the store to copy: a file path or a postgresql:// URL")
    p.add_argument("dst", metavar="DST", help="a new file, or an empty PostgreSQL database (its URL)")


def cmd_store_copy(args: argparse.Namespace) -> int:
    src, dst = parse_locator(args.src, "SRC"), parse_locator(args.dst, "DST")

    def progress(line: str) -> None:
        if not want_json(args):
            sys.stderr.write(f"copy: {line}\n")
    counts = storecopy.copy(src, dst, progress)
    if want_json(args):
        emit_json({"from": redact(src), "to": redact(dst), "rows": counts})
    else:
        print(f"copied {sum(counts.values())} row(s) in {sum(1 for n in counts.values() if n)} table(s) "
              f"from {redact(src)} to {redact(dst)}")
    return 0
