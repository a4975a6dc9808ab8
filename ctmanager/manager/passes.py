"""One reconcile pass, as the CLI runs it (`ctmanager plan`, `ctmanager reconcile`),
through the daemon's own core (manager/core.py): quorum, failover and the
in-flight rules decide here exactly as in `ctmanager run`.

The pass reads the configured state, placements and the HNs' newest reports
from the store; an HN whose report is stale (no daemon runs) is asked over SSH
(`ctagent observe`), and an answer counts as mutual contact. `reconcile`
takes the rack's lease for its pass (store/lease.py), as a manager daemon
leads: it refuses while a daemon leads the rack (two deciders would race), its
writes are fenced by the lease, and its actions carry the lease's epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..dc.model import DcTemplate
from ..errors import ConflictError, StoreError
from ..executor.runner import Executor, Result
from ..fencing.quorum import MANAGER
from ..reconcile.state import Configured, Observed, Placements, Plan
from ..store import Store, queries
from ..store import lease as leases
from ..store import loop as persist
from ..wire.spec import spec_for
from .config import ManagerConfig
from .core import Core, Decision
from .reach import observe


@dataclass
class PassInputs:
    """Everything the pass decided from, plus what was learnt on the way."""

    configured: Configured
    observed: Observed
    placements: Placements
    now: float
    decision: Decision
    unreachable: dict[str, str] = field(default_factory=dict)  # HN -> why it could not be asked


def executor_for(store: Store, config: ManagerConfig) -> Executor:
    addresses = {n.hostname: n.ip for n in queries.nodes(store, rack=config.slot) if n.role == "compute"}
    return Executor(addresses, config.ssh, list(config.agent_command), timeout=config.action_timeout,
                    concurrency=config.concurrency)


def storage_for(store: Store, config: ManagerConfig) -> Any:
    """ctstorage on every storage node of the DC (a move pulls from another rack's)."""
    from ..executor.storage import StorageNodes

    addresses = {n.hostname: n.ip for n in queries.nodes(store) if n.role == "storage"}
    ssh = dataclasses.replace(config.ssh, known_hosts=config.moves.known_hosts or config.ssh.known_hosts)
    return StorageNodes(addresses, ssh, list(config.moves.storage_command))


def backups_for(store: Store, config: ManagerConfig, rack: int | None = None) -> Any:
    """ctbackup on the storage nodes of this rack (or `rack`), with the storage nodes' pinned keys."""
    from ..executor.backups import BackupNodes

    slot = config.slot if rack is None else rack
    addresses = {n.hostname: n.ip for n in queries.nodes(store, rack=slot) if n.role == "storage"}
    ssh = dataclasses.replace(config.ssh, known_hosts=config.moves.known_hosts or config.ssh.known_hosts)
    return BackupNodes(addresses, ssh, list(config.backups.command))


RECONCILE = "ctmanager reconcile"  # the lease holder's name while a CLI pass acts
PASS_TTL = 60.0  # s the lease of a pass lasts before its actions are known (then: their deadline)


def release(store: Store, lease: leases.Lease) -> None:
    store.fence = None
    with contextlib.suppress(StoreError):  # it expires by itself
        leases.release(store, lease)


def take_rack(store: Store, config: ManagerConfig, ttl: float = PASS_TTL) -> leases.Lease:
    """The rack's lease for one reconcile pass, or a ConflictError naming who leads."""
    detail = f"ctmanager reconcile pid {os.getpid()} on {socket.gethostname()}"
    got = leases.acquire(store, config.slot, RECONCILE, str(uuid.uuid4()), detail, ttl)
    if got is None:
        refuse(store, config)
    assert got is not None
    store.fence = lambda s: leases.check(s, got)
    return got


def refuse(store: Store, config: ManagerConfig) -> None:
    lease = leases.current(store, config.slot)
    now = store.now()  # the lease is on the store's clock
    if lease is None or not lease.live(now):
        raise ConflictError(f"rack-{config.slot}: its lease changed hands meanwhile; try again")
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(lease.acquired))
    raise ConflictError(f"rack-{config.slot} is led by {lease.holder} ({lease.detail}) since {since} (lease "
                        f"renewed {max(now - lease.renewed, 0):.1f}s ago); reconcile would act beside it. "
                        "See what it will do with: ctmanager plan")


def gather(store: Store, dc: DcTemplate, config: ManagerConfig, executor: Executor,
           now: float | None = None) -> PassInputs:
    now = store.now() if now is None else now  # stored reports are judged on the store's clock
    with store.snapshot():
        cfg = persist.configured(store, dc, config.slot)
        stored = persist.observed(store, config.slot, store_clock=True)
        placements = persist.placements(store, now, config.slot)
    settings, timers = config.settings, config.timers
    # Started long ago: no warm-up wait; and quorum has not been held for dead_after
    # yet, so a pass never declares an HN dead (only the daemon, which watched, does).
    core = Core(cfg, placements, settings, timers, now - timers.dead_after - settings.stale_after)
    unreachable: dict[str, str] = {}
    stale = []
    answers = []
    for hn in sorted(cfg.hns):
        report = stored.reports.get(hn)
        if report is not None and stored.known(hn, now, settings):
            answers.append(report)  # fresh: the manager daemon is in contact with this HN
        else:
            stale.append(hn)
    for hn, got in zip(stale, executor.pool.map(lambda h: observe(executor, config, h), stale)):
        if isinstance(got, str):
            unreachable[hn] = got
        else:  # it answered over SSH just now
            answers.append(got)
    for report in answers:  # either way, contact both ways now, as far as this pass can tell
        core.heard(report._replace(sent_at=now, hears={**report.hears, MANAGER: 0.0}), now)
    decision = core.decide(now, None)
    return PassInputs(core.configured, core.observed, core.placements, now, decision, unreachable)


def make_plan(inputs: PassInputs) -> Plan:
    """What this pass does: the plan, less what the core holds back."""
    d = inputs.decision
    return dataclasses.replace(d.plan, actions=d.actions)


def quorum_problem(inputs: PassInputs) -> str:
    """Why nothing may be done ('' when the pass has quorum)."""
    if inputs.decision.view.quorum:
        return ""
    return next((n for n in inputs.decision.view.news if n.startswith("NO QUORUM")), "NO QUORUM")


def execute(store: Store, dc: DcTemplate, config: ManagerConfig, executor: Executor, inputs: PassInputs,
            p: Plan, lease: leases.Lease) -> list[Result]:
    """Record placements and intents, run the actions, record the outcomes, all
    under the lease `take_rack` gave (renewed to cover the actions' deadline)."""
    per_hn: dict[str, int] = {}
    for a in p.actions:
        per_hn[a.hn] = per_hn.get(a.hn, 0) + 1
    lease = leases.renew(store, lease, config.action_timeout * max(per_hn.values(), default=0) + PASS_TTL)
    with store.transaction(config=False):  # fenced: the lease is checked under the write lock
        lost = persist.save_placements(store, p.place, inputs.now, inputs.decision.was)
        actions = [a for a in p.actions if a.ctid not in lost]
        kept = persist.journal(store, actions, inputs.now, config.slot, lease.epoch)  # re-checked
    actions, ids = [a for a, _ in kept], [jid for _, jid in kept]
    cts = inputs.configured.cts
    results = executor.run_all(actions, lambda c: spec_for(cts[c], dc) if c in cts else None, lease.epoch)
    by_action = {(r.action.kind, r.action.ctid, r.action.hn): r for r in results}
    with store.transaction(config=False):
        for jid, a in zip(ids, actions):
            r = by_action[(a.kind, a.ctid, a.hn)]
            persist.finish(store, jid, a, r.result, r.message, time.time(), config.settings, config.slot)
    return [by_action[(a.kind, a.ctid, a.hn)] for a in actions]
