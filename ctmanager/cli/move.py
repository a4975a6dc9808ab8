"""`ctmanager tenant move|moves`: move a tenant to another rack with its data.

The CLI only records the move (operations/moves.py); the destination rack's leading
manager steps it from its loop (manager/workflows.py) and the record says how far it got, so any
process may die at any point and the move goes on or rolls back from there.
"""

from __future__ import annotations

import argparse
import sys
import time

from .. import validate as v
from ..dc.model import rack_name
from ..errors import InputError
from ..operations import moves as moveops
from ..reconcile.moving import Move
from ..store import lease as leases
from ..store import moves, queries
from .common import Registry, editing, parse_rack, seconds_in, store_of, want_json
from .output import age, emit_json, table

NOT_MOVED = ("Data in shared service CTs is not moved: the tenant's mailboxes on the source rack's mailstore, "
             "its metrics on the source rack's carbon stay there (copy them with the service's own tools).")
WAIT_POLL = 0.2
QUIET = 15.0  # s of no new log line after which --wait says it is still at it


def register(reg: Registry) -> None:
    tenants = reg.groups["tenant"]
    p = reg.cmd(tenants, "move", cmd_tenant_move,
                "move a tenant to another rack with its /data: copy while it runs, stop, copy the rest, start "
                "there, then delete the source copy (run by the destination rack's manager)",
                "ctmanager tenant move myhost --to rack-102 --wait")
    p.add_argument("name", help="the tenant")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--to", metavar="RACK", help="the rack to move it to (rack-102 or 102)")
    what.add_argument("--abort", action="store_true", help="stop the tenant's open move and roll it back: before "
                      "the cutover it runs on at the source, unchanged; after it, the destination's /data is copied "
                      "back first (nothing written there is lost); the partial copies are removed (only before it is "
                      "online)")
    what.add_argument("--delete-source", action="store_true",
                      help="a move made with --keep-source: delete the source copy now")
    p.add_argument("--dry-run", action="store_true", help="say what the move would do; change nothing")
    p.add_argument("--keep-source", action="store_true",
                   help="keep the source copy when the tenant is online at the destination (delete it later "
                        "with --delete-source)")
    p.add_argument("--no-precopy", action="store_true",
                   help="stop the tenant first and copy everything while it is down (the downtime is the whole "
                        "copy; for a tenant that is down anyway)")
    p.add_argument("--bwlimit", metavar="RATE", help="bandwidth of the copy per second, e.g. 50M "
                   "(default: the manager's [moves] bwlimit)")
    p.add_argument("--wait", action="store_true", help="follow the move until it is online or rolled back; exit 0 when it ended as asked (online or done; "
                   "with --abort: rolled back), 1 otherwise")
    p.add_argument("--timeout", type=seconds_in(1, 7 * 86400), default=3600.0,
                   help="with --wait: give up waiting after this many seconds (the move goes on)")
    p = reg.cmd(tenants, "moves", cmd_tenant_moves,
                "tenant moves: phase, passes, bytes copied, downtime, error", "ctmanager tenant moves --open")
    p.add_argument("name", nargs="?", help="only this tenant's moves")
    p.add_argument("--open", action="store_true", help="only moves not finished")
    p.add_argument("--log", action="store_true", help="with each move, its log")
    p.add_argument("--limit", type=v.int_arg(1, 100000), default=50, help="the newest N moves (default 50)")


def cmd_tenant_move(args: argparse.Namespace) -> int:
    if args.abort or args.delete_source:
        return _change(args)
    dst = parse_rack(args.to, "--to")
    bwlimit = v.size(args.bwlimit, "--bwlimit", minimum=1 << 10, maximum=1 << 40) if args.bwlimit else 0
    if args.dry_run:
        with store_of(args) as store:
            dc = queries.dc_template(store)
            m = moveops.prepare(store, dc, v.label(args.name, "tenant"), dst)
        return _dry_run(args, m)
    with editing(args) as (store, inv):
        m = moveops.begin(store, inv.dc, v.label(args.name, "tenant"), dst, store.now(),
                          precopy=not args.no_precopy, keep_source=args.keep_source, bwlimit=bwlimit)
        led = dst in leases.leaders(store)
    if not want_json(args):
        print(f"move {m.id}: tenant {m.tenant} {rack_name(m.src)} -> {rack_name(m.dst)}, {len(m.cts)} CT(s); "
              f"run by {rack_name(m.dst)}'s manager (follow: ctmanager tenant moves {m.tenant} --log)")
    if not led:  # nothing is lost meanwhile: the tenant runs on at the source
        sys.stderr.write(f"note: {rack_name(m.dst)} has no leading manager now (ctmanager manager status); the "
                         f"move begins when one leads (or: ctmanager tenant move {m.tenant} --abort)\n")
    return _wait(args, m) if args.wait else _show(args, m)


def _change(args: argparse.Namespace) -> int:
    if args.dry_run or args.keep_source or args.no_precopy or args.bwlimit:
        raise InputError("--abort and --delete-source take no other option but --wait")
    name = v.label(args.name, "tenant")
    with editing(args) as (store, _inv):
        m = moves.open_of(store, name)
        if m is None:
            queries.tenant_rack(store, name)  # no such tenant: says so
            raise InputError(f"tenant {name} has no open move (see: ctmanager tenant moves {name})")
        now = store.now()
        if args.abort:
            m = moves.ask_abort(store, m, now, runner_alive=m.dst in leases.leaders(store))
        else:
            if m.phase != "online" or not m.keep_source:
                raise InputError(f"move {m.id} is {m.phase}: --delete-source is for a move online with --keep-source")
            m = moves.update(store, m, now, "deleting the source copy, as asked", keep_source=False)
    if not want_json(args):
        if m.finished_at is not None:
            print(f"move {m.id} of {m.tenant}: {m.log[-1].partition(' ')[2]}")
        else:
            print(f"move {m.id} of {m.tenant}: {'abort' if args.abort else 'delete of the source copy'} asked; "
                  f"{rack_name(m.dst)}'s manager carries it out")
    return _wait(args, m) if args.wait else _show(args, m)


def _show(args: argparse.Namespace, m: Move) -> int:
    if want_json(args):
        emit_json(m.as_json())
    return 0


def _dry_run(args: argparse.Namespace, m: Move) -> int:
    if want_json(args):
        emit_json({**m.as_json(), "dry_run": True, "not_moved": NOT_MOVED})
        return 0
    print(f"would move tenant {m.tenant} from {rack_name(m.src)} to {rack_name(m.dst)} (nothing changed):")
    for c in m.cts:
        print(f"  CT {c.ctid} {c.hostname}: /data {c.src_storage} -> {c.dst_storage}; "
              f"address {c.src_ip} -> a new one in {rack_name(m.dst)}'s /16; same CTID")
    for service, (a, b) in sorted(m.routes.items()):
        print(f"  route {service}: {a}" + (f" -> {b}" if a != b else " (unchanged)"))
    print("  copy while it runs; stop at the source and seal its /data (its manager proves every CT down); copy "
          "the rest; start at the destination, publish DNS; then delete the source copy"
          + (" (kept: --keep-source)" if args.keep_source else ""))
    print(f"  {NOT_MOVED}")
    return 0


def _wait(args: argparse.Namespace, m: Move) -> int:
    """Print the move's new log lines until it is online (or done) or rolled back."""
    deadline = time.monotonic() + args.timeout
    shown: set[str] = set()
    quiet_since = time.monotonic()
    with store_of(args) as store:
        while True:
            m = moves.get(store, m.id)
            if not want_json(args):
                for line in m.log:
                    if line not in shown:
                        shown.add(line)
                        quiet_since = time.monotonic()
                        print(f"  {line.partition(' ')[2]}", flush=True)
                if time.monotonic() - quiet_since >= QUIET:  # a long pass says nothing until it ends
                    quiet_since = time.monotonic()
                    what = {"copy": f"copying (pass {m.passes + 1})"}.get(m.phase, f"{m.phase} {m.step}".strip())
                    print(f"  ... {what}, {age(store.now() - m.updated_at)} since the last line", flush=True)
            settled = m.finished_at is not None or (m.phase == "online" and m.keep_source)
            if settled or time.monotonic() > deadline:
                break
            time.sleep(WAIT_POLL)
    ok = m.phase == "rolled-back" if getattr(args, "abort", False) else m.phase in ("done", "online")  # as asked
    if want_json(args):
        emit_json(m.as_json())
    elif not settled:
        sys.stderr.write(f"move {m.id}: still {m.phase} after {args.timeout:g} s; it goes on "
                         f"(ctmanager tenant moves {m.tenant})\n")
    else:
        print(_summary(m))
    return 0 if ok and settled else 1


def _summary(m: Move) -> str:
    down = f", downtime {m.downtime:.1f} s" if m.downtime is not None else ""
    if m.phase in ("done", "online"):
        passes = f"{m.passes - 1} pre-copy pass(es) and the final one" if m.precopy else "one whole copy"
        return (f"move {m.id}: {m.tenant} is online in {rack_name(m.dst)} after {passes}, "
                f"{_mib(m.bytes)} copied{down}" + ("; source copy kept (--delete-source deletes it)"
                                                  if m.phase == "online" else ""))
    return f"move {m.id}: rolled back, {m.tenant} runs in {rack_name(m.src)}: {m.error}"


def _short(error: str) -> str:
    """The ERROR column: its start (--json and --log have it whole)."""
    return "-" if not error else error if len(error) <= 72 else error[:71] + "…"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def cmd_tenant_moves(args: argparse.Namespace) -> int:
    with store_of(args) as store:
        name = v.label(args.name, "tenant") if args.name else None
        rows = moves.listing(store, tenant=name, open_only=args.open, limit=args.limit)
        now = store.now()
    if want_json(args):
        emit_json([m.as_json() for m in rows])
        return 0
    table(("MOVE", "TENANT", "FROM", "TO", "PHASE", "STEP", "PASSES", "COPIED", "DOWNTIME", "AGE", "ERROR"),
          [(m.id, m.tenant, rack_name(m.src), rack_name(m.dst), m.phase, m.step or "-", m.passes, _mib(m.bytes),
            f"{m.downtime:.1f} s" if m.downtime is not None else "-", age(now - m.created_at), _short(m.error))
           for m in rows])
    if args.log:
        for m in rows:
            print(f"\nmove {m.id} ({m.tenant}):")
            for line in m.log:
                at, _, text = line.partition(" ")
                print(f"  {time.strftime('%H:%M:%S', time.gmtime(float(at)))} {text}")
    return 0
