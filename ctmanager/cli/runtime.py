"""Runtime commands: plan, reconcile, run, hn list|drain|undrain, ct move|exec, lab.

These reach the HNs, so they need the manager config (--config or
$CTMANAGER_CONFIG) besides the store.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from typing import Any

from .. import queries
from ..errors import InputError, NotFoundError
from ..validate import format_size
from .commands import _json, _parse_rack, _store
from .output import age, emit_json, table


def register(sub: argparse._SubParsersAction, helpers: dict[str, Any]) -> None:
    cmd, group = helpers["cmd"], helpers["group"]

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", metavar="FILE", help="manager config (default: $CTMANAGER_CONFIG)")
        return p

    with_config(cmd(sub, "plan", cmd_plan, "dry run: print each action a reconcile pass would take, and why",
                    "ctmanager plan --config lab/manager.toml"))
    with_config(cmd(sub, "reconcile", cmd_reconcile, "one reconcile pass: plan, act over SSH, print each result",
                    "ctmanager reconcile --json"))
    p = with_config(cmd(sub, "run", cmd_run, "the per-rack manager daemon: take reports, plan, act (logs one line per decision)",
                        "ctmanager run --config /etc/ctmanager/rack-101.toml"))
    p.add_argument("-v", "--verbose", action="store_true", help="also log notes (waits, strays) every full plan")

    hns = group("hn", "hypervisor nodes: reports, drain")
    p = cmd(hns, "list", cmd_hn_list, "HNs with last report age, CT count, metrics and drain flag", "ctmanager hn list")
    p.add_argument("--rack", help="only this rack (rack-101 or 101)")
    p = cmd(hns, "drain", cmd_hn_drain, "move every CT off an HN and place nothing new there", "ctmanager hn drain hn-101-1")
    p.add_argument("hn")
    p = cmd(hns, "undrain", cmd_hn_undrain, "let the scheduler use a drained HN again", "ctmanager hn undrain hn-101-1")
    p.add_argument("hn")

    cts = helpers["ct"]
    p = cmd(cts, "move", cmd_ct_move, "move a CT to another HN (stopped there first: a CT never runs twice)",
            "ctmanager ct move 1005 --to hn-101-2")
    p.add_argument("ct", help="CTID or hostname")
    p.add_argument("--to", required=True, metavar="HN")
    p = with_config(cmd(cts, "exec", cmd_ct_exec, "run a command inside a CT through its HN's agent; exit code passed through",
                        "ctmanager ct exec myhost -- svstat /data/service/httpd"))
    p.add_argument("ct", help="CTID or hostname")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="-- CMD ARGS...")

    from ..lab.cli import register as register_lab
    from ..dnsroutes.cli import register as register_dns
    from ..monitoring.cli import register as register_metrics
    from ..proxies.dante import register as register_socks
    from ..proxies.edgecli import register as register_edge
    from ..proxies.postfix import register as register_mail
    from ..sim.cli import register as register_sim

    register_lab(sub, helpers)
    register_sim(sub, helpers)
    register_dns(sub, helpers)
    register_metrics(sub, helpers)
    register_mail(sub, helpers)
    register_edge(sub, helpers)
    register_socks(sub, helpers)


def _setup(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from ..manager import config as mconfig

    config = mconfig.load(mconfig.find(getattr(args, "config", None)))
    store = _store(args)
    dc = queries.dc_template(store)
    return config, store, dc


def cmd_plan(args: argparse.Namespace, execute: bool = False) -> int:
    from ..manager import passes

    config, store, dc = _setup(args)
    executor = passes.executor_for(store, config)
    try:
        view = passes.gather(store, dc, config, executor)
        p = passes.make_plan(view, config)
        results = passes.execute(store, dc, config, executor, view, p) if execute else []
    finally:
        executor.close()
        store.close()
    failed = [r for r in results if not r.ok]
    if _json(args):
        emit_json({"actions": [r.as_json() for r in results] if execute else
                   [{"kind": a.kind, "ctid": a.ctid, "hn": a.hn, "reason": a.reason} for a in p.actions],
                   "place": {str(c): hn for c, hn in p.place.items()}, "notes": list(p.notes),
                   "unreachable": view.unreachable})
    else:
        for hn, why in sorted(view.unreachable.items()):
            print(f"unreachable {hn}: {why}")
        if execute:
            for r in results:
                print(f"{r.action}: {r.result}" + ("" if r.ok else f": {r.message}"))
        else:
            print("\n".join(p.lines()) if p.lines() else "nothing to do")
        if execute and not results:
            print("nothing to do")
    return 1 if failed else 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    return cmd_plan(args, execute=True)


def cmd_run(args: argparse.Namespace) -> int:
    from ..manager.daemon import Manager
    from ..manager.passes import executor_for

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s ctmanager %(levelname)s %(message)s")
    for noisy in ("paramiko", "invoke", "fabric"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config, store, dc = _setup(args)
    try:
        manager = Manager(store, dc, config, executor_for(store, config))
    except OSError as exc:
        raise InputError(f"cannot listen on {config.listen[0]}:{config.listen[1]}: {exc.strerror}") from None
    signal.signal(signal.SIGTERM, lambda *_: manager.stop())
    signal.signal(signal.SIGINT, lambda *_: manager.stop())
    try:
        manager.run()
    finally:
        manager.executor.close()
        store.close()
    return 0


def _compute_node(store: Any, name: str) -> Any:
    for n in queries.nodes(store):
        if n.hostname == name:
            if n.role != "compute":
                raise InputError(f"{name} is a {n.role} node, not an HN")
            return n
    raise NotFoundError(f"no HN {name!r} (see: ctmanager hn list)")


def cmd_hn_list(args: argparse.Namespace) -> int:
    from ..reports import ReportError, parse_body

    now = time.time()
    with _store(args) as store:
        rack = None
        if args.rack:
            rack = _parse_rack(args.rack, "--rack")
        reports = {r["hn"]: r for r in store.query("SELECT hn, received_at, body FROM hn_reports")}
        rows = []
        for n in queries.nodes(store, rack=rack):
            if n.role != "compute":
                continue
            r = reports.get(n.hostname)
            rep = None
            if r is not None:
                try:
                    rep = parse_body(r["body"])
                except ReportError:
                    rep = None
            m = rep.metrics if rep else None
            rows.append({
                "hn": n.hostname, "ip": n.ip, "drained": n.drained or bool(rep and rep.drained),
                "report_age": None if r is None else round(now - r["received_at"], 1),
                "cts": None if rep is None else sum(1 for c in rep.cts if c.opst == "UP"),
                "mem_free": m and m.mem_free, "disk_free": m and m.disk_free, "cpu_load": m and m.cpu_load,
            })
    if _json(args):
        emit_json(rows)
    else:
        table(("HN", "IP", "REPORT_AGE", "CTS_UP", "MEM_FREE", "DISK_FREE", "LOAD", "DRAINED"), [
            (r["hn"], r["ip"], age(r["report_age"]) if r["report_age"] is not None else "never", r["cts"],
             format_size(r["mem_free"]) if r["mem_free"] is not None else None,
             format_size(r["disk_free"]) if r["disk_free"] is not None else None, r["cpu_load"],
             "yes" if r["drained"] else "no") for r in rows])
    return 0


def _set_drain(args: argparse.Namespace, drained: bool) -> int:
    with _store(args) as store:
        with store.transaction():
            _compute_node(store, args.hn)
            store.db.execute("UPDATE nodes SET drained = ? WHERE hostname = ?", (int(drained), args.hn))
            store.event("hn.drain" if drained else "hn.undrain", args.hn)
    if _json(args):
        emit_json({"hn": args.hn, "drained": drained})
    else:
        print(f"{args.hn} {'drained: its CTs move away' if drained else 'undrained: the scheduler may use it again'}")
    return 0


def cmd_hn_drain(args: argparse.Namespace) -> int:
    return _set_drain(args, True)


def cmd_hn_undrain(args: argparse.Namespace) -> int:
    return _set_drain(args, False)


def cmd_ct_move(args: argparse.Namespace) -> int:
    with _store(args) as store:
        with store.transaction():
            ct = queries.find_ct(store, args.ct)
            node = _compute_node(store, args.to)
            if node.rack != ct.rack:
                raise InputError(f"{args.to} is in rack-{node.rack}; CT {ct.ctid} lives in rack-{ct.rack}")
            if node.drained:
                raise InputError(f"{args.to} is drained; undrain it first: ctmanager hn undrain {args.to}")
            row = store.one("SELECT hn FROM placements WHERE ctid = ?", (ct.ctid,))
            store.db.execute("INSERT INTO placements (ctid, hn, placed_at) VALUES (?, ?, ?) ON CONFLICT(ctid) "
                             "DO UPDATE SET hn = excluded.hn, placed_at = excluded.placed_at", (ct.ctid, args.to, time.time()))
            store.db.execute("DELETE FROM rejections WHERE ctid = ? AND hn = ?", (ct.ctid, args.to))
            store.event("ct.move", str(ct.ctid), f"{row[0] if row else '-'} -> {args.to}")
    if _json(args):
        emit_json({"ctid": ct.ctid, "from": row[0] if row else None, "to": args.to})
    else:
        print(f"CT {ct.ctid} {ct.hostname}: {row[0] if row else 'unplaced'} -> {args.to} (stopped there first, then started here)")
    return 0


def cmd_ct_exec(args: argparse.Namespace) -> int:
    from ..manager import passes

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise InputError("give the command after --, e.g. ctmanager ct exec myhost -- uptime")
    config, store, dc = _setup(args)
    executor = passes.executor_for(store, config)
    try:
        ct = queries.find_ct(store, args.ct)
        view = passes.gather(store, dc, config, executor)
        up = [hn for hn, s in view.observed.where.get(ct.ctid, {}).items() if s == "UP"]
        if not up:
            raise InputError(f"CT {ct.ctid} {ct.hostname} is not running on any reachable HN (see: ctmanager status)")
        out = executor.hn(up[0]).run([*config.agent_command, "exec", str(ct.ctid), "--", *argv], b"",
                                     config.action_timeout)
    finally:
        executor.close()
        store.close()
    sys.stdout.buffer.write(out.out)
    sys.stderr.buffer.write(out.err)
    return out.rc

