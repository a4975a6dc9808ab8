"""`ctmanager plan|reconcile|run`: the reconcile loop, once or as the rack's daemon.

These reach the HNs, so they need the manager config (--config or
$CTMANAGER_CONFIG) besides the store.
"""

from __future__ import annotations

import argparse
import signal

from ..errors import ConflictError, InputError
from .common import Registry, manager_setup, want_json, with_config
from .output import emit_json


def register(reg: Registry) -> None:
    with_config(reg.cmd(reg.sub, "plan", cmd_plan, "dry run: print each action a reconcile pass would take, and why",
                        "ctmanager plan --config lab/manager.toml"))
    with_config(reg.cmd(reg.sub, "reconcile", cmd_reconcile, "one reconcile pass: plan, act over SSH, print each result",
                        "ctmanager reconcile --json"))
    p = with_config(reg.cmd(reg.sub, "run", cmd_run,
                            "the per-rack manager daemon: take reports, plan, act (logs one line per decision)",
                            "ctmanager run --config /etc/ctmanager/rack-101.toml"))
    p.add_argument("-v", "--verbose", action="store_true", help="also log notes (waits, strays) every full plan")


def cmd_plan(args: argparse.Namespace, execute: bool = False) -> int:
    from ..manager import passes

    config, store, dc = manager_setup(args)
    executor = passes.executor_for(store, config)
    lease = None
    try:
        if execute:
            lease = passes.take_rack(store, config)
        view = passes.gather(store, dc, config, executor)
        p = passes.make_plan(view)
        no_quorum = passes.quorum_problem(view)
        results = passes.execute(store, dc, config, executor, view, p, lease) \
            if lease is not None and not no_quorum else []
    finally:
        if lease is not None:
            passes.release(store, lease)
        executor.close()
        store.close()
    failed = [r for r in results if not r.ok]
    if want_json(args):
        emit_json({"actions": [r.as_json() for r in results] if execute else
                   [{"kind": a.kind, "ctid": a.ctid, "hn": a.hn, "reason": a.reason} for a in p.actions],
                   "place": {str(c): hn for c, hn in p.place.items()}, "notes": list(p.notes),
                   "alarms": list(p.alarms), "unreachable": view.unreachable, "quorum": not no_quorum,
                   **({"no_quorum": no_quorum} if no_quorum else {})})
    else:
        for hn, why in sorted(view.unreachable.items()):
            print(f"unreachable {hn}: {why}")
        if no_quorum:
            print(f"{no_quorum}")
        if execute:
            for r in results:
                print(f"{r.action}: {r.result}" + ("" if r.ok else f": {r.message}"))
        else:
            print("\n".join(p.lines()) if p.lines() else "nothing to do")
        if execute and not results:
            print("nothing to do")
    return 1 if failed or (execute and no_quorum) else 0

def cmd_reconcile(args: argparse.Namespace) -> int:
    return cmd_plan(args, execute=True)

def cmd_run(args: argparse.Namespace) -> int:
    import logging

    from .. import daemonlog
    from ..dnsroutes import sync
    from ..dnsroutes.worker import DnsWorker
    from ..manager.backups import BackupWatch
    from ..manager.daemon import Manager
    from ..manager.effects import StorageEffects
    from ..manager.passes import backups_for, executor_for, storage_for
    from ..manager.ports import Doorbell, ManagerEnv, ThreadRunner
    from ..monitoring.metrics import MetricsSender
    from ..sdnotify import Notifier
    from ..store.watch import open_watch
    from ..wire.udp import UdpTransport

    daemonlog.setup("ctmanager", logging.DEBUG if args.verbose else logging.INFO)
    notifier = Notifier.from_env()  # read (and taken out of the environment) before any child starts
    config, store, dc = manager_setup(args)
    try:
        # One process per manager name: a second one would take its lease over.
        with store.lock(f"manager-rack-{config.slot}-{config.name}", wait=0) as mine:
            if not mine:
                raise ConflictError(f"a manager named {config.name} already runs for rack-{config.slot} on this "
                                    "store; give each manager of a rack its own `name` in its config")
            try:
                bell = Doorbell()  # the loop's: a job's outcome wakes it
                runner = ThreadRunner(bell)  # the leader-only workers' I/O, off the loop
                watch = BackupWatch(store.path, config.slot, lambda s: backups_for(s, config), config.backups,
                                    runner, MetricsSender(config.graphite, config.metrics_prefix))
                env = ManagerEnv(store, executor_for(store, config), UdpTransport(config.listen, config.key),
                                 dns=DnsWorker(store.path, runner, rack=config.slot), watch=open_watch(store.path),
                                 storage=StorageEffects(storage_for(store, config)), dns_pending=sync.unpublished,
                                 workers=[watch], bell=bell)
                manager = Manager(dc, config, env, notifier=notifier)
            except OSError as exc:
                raise InputError(f"cannot listen on {config.listen[0]}:{config.listen[1]}: {exc.strerror}") from None
            manager.leadership.own_name = True  # the name is ours: a crashed earlier run's lease is taken at once
            signal.signal(signal.SIGTERM, lambda *_: manager.stop())
            signal.signal(signal.SIGINT, lambda *_: manager.stop())
            try:
                manager.run()
            finally:
                manager.executor.close()
    finally:
        store.close()
    return 0
