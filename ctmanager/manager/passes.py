"""One reconcile pass, as the CLI runs it (`ctmanager plan`, `ctmanager reconcile`),
through the daemon's own core (manager/core.py): quorum, failover and the
in-flight rules decide here exactly as in `ctmanager run`.

The pass reads the configured state, placements and the HNs' newest reports
from the store; an HN whose report is stale (no daemon runs) is asked over SSH
(`ctagent observe`), and an answer counts as mutual contact. `reconcile`
refuses while a manager daemon holds the rack: two deciders would race.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from ..dc.model import DcTemplate
from ..errors import ConflictError
from ..executor.runner import Executor, Result
from ..executor.ssh import SshError
from ..fencing.quorum import MANAGER
from ..reconcile.state import Configured, Observed, Placements, Plan
from ..store import Store, queries
from ..store import daemon as held
from ..store import loop as persist
from ..wire.reports import ReportError, parse_body
from ..wire.spec import spec_for
from .config import ManagerConfig
from .core import Core, Decision


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


def refuse_if_held(store: Store, config: ManagerConfig) -> None:
    h = held.holder(store, config.slot)
    now = store.now()  # the holder's refresh is on the store's clock too
    if h is not None and h.live(now):
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(h.since))
        raise ConflictError(f"rack-{config.slot} is managed by {h.holder} since {since} (last heard "
                            f"{max(now - h.stored, 0):.1f}s ago); reconcile would act beside it. "
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
    for hn, got in zip(stale, executor.pool.map(lambda h: _ask(executor, config, h), stale)):
        if isinstance(got, str):
            unreachable[hn] = got
        else:  # it answered over SSH just now
            answers.append(got)
    for report in answers:  # either way, contact both ways now, as far as this pass can tell
        core.heard(report._replace(sent_at=now, hears={**report.hears, MANAGER: 0.0}), now)
    decision = core.decide(now, None)
    return PassInputs(core.configured, core.observed, core.placements, now, decision, unreachable)


def _ask(executor: Executor, config: ManagerConfig, hn: str) -> Any:
    try:
        out = executor.hn(hn).run([*config.agent_command, "observe"], b"", config.ssh.connect_timeout + 10)
    except SshError as exc:
        return str(exc)
    if out.rc != 0:
        return f"ctagent observe exited {out.rc}: {out.err.decode(errors='replace').strip()[-200:]}"
    try:
        return parse_body(out.out)
    except ReportError as exc:
        return f"ctagent observe: {exc}"


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
            p: Plan) -> list[Result]:
    """Record placements and intents, run the actions, record the outcomes."""
    with store.transaction(config=False):
        refuse_if_held(store, config)  # checked again under the write lock
        lost = persist.save_placements(store, p.place, inputs.now, inputs.decision.was)
        actions = [a for a in p.actions if a.ctid not in lost]
        ids = persist.journal(store, actions, inputs.now, config.slot)
    cts = inputs.configured.cts
    results = executor.run_all(actions, lambda c: spec_for(cts[c], dc) if c in cts else None)
    by_action = {(r.action.kind, r.action.ctid, r.action.hn): r for r in results}
    with store.transaction(config=False):
        for jid, a in zip(ids, actions):
            r = by_action[(a.kind, a.ctid, a.hn)]
            persist.finish(store, jid, a, r.result, r.message, time.time(), config.settings, config.slot)
    return [by_action[(a.kind, a.ctid, a.hn)] for a in actions]
