"""One reconcile pass, as the CLI runs it (`ctmanager plan`, `ctmanager reconcile`):
read the configured state and placements from the store, the observed state
from the HNs' newest reports (asking an HN over SSH when its report is stale,
e.g. when no manager daemon runs), plan, and for `reconcile` execute and record.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from ..store import queries
from ..wire.spec import spec_for
from ..executor.runner import Executor, Result
from ..executor.ssh import SshError
from ..dc.model import DcTemplate
from ..store import loop as persist
from ..reconcile.plan import plan
from ..reconcile.state import Configured, Observed, Placements, Plan
from ..wire.reports import ReportError, parse_body
from ..store import Store
from .config import ManagerConfig

log = logging.getLogger(__name__)


@dataclass
class View:
    """Everything plan() reads, plus what was learnt on the way."""

    configured: Configured
    observed: Observed
    placements: Placements
    now: float
    unreachable: dict[str, str] = field(default_factory=dict)  # HN -> why it could not be asked


def executor_for(store: Store, config: ManagerConfig) -> Executor:
    addresses = {n.hostname: n.ip for n in queries.nodes(store, rack=config.slot) if n.role == "compute"}
    return Executor(addresses, config.ssh, list(config.agent_command), timeout=config.action_timeout,
                    concurrency=config.concurrency)


def gather(store: Store, dc: DcTemplate, config: ManagerConfig, executor: Executor, now: float | None = None) -> View:
    now = time.time() if now is None else now
    cfg = persist.configured(store, dc, config.slot)
    obs = persist.observed(store)
    view = View(cfg, obs, persist.placements(store, now), now)
    stale = [hn for hn in cfg.hns if not obs.known(hn, now, config.settings)]
    for hn, got in zip(stale, executor.pool.map(lambda h: _ask(executor, config, h), stale)):
        if isinstance(got, str):
            view.unreachable[hn] = got
        else:
            obs.update(got, now)
    return view


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


def make_plan(view: View, config: ManagerConfig) -> Plan:
    return plan(view.configured, view.observed, view.placements, view.now, settings=config.settings)


def execute(store: Store, dc: DcTemplate, config: ManagerConfig, executor: Executor, view: View,
            p: Plan) -> list[Result]:
    """Record placements and intents, run the actions, record the outcomes."""
    with store.transaction():
        persist.save_placements(store, dict(p.place), view.now)
        ids = persist.journal(store, p.actions, view.now)
    cts = view.configured.cts
    results = executor.run_all(p.actions, lambda c: spec_for(cts[c], dc) if c in cts else None)
    by_action = {(r.action.kind, r.action.ctid, r.action.hn): r for r in results}
    with store.transaction():
        for jid, a in zip(ids, p.actions):
            r = by_action[(a.kind, a.ctid, a.hn)]
            persist.finish(store, jid, a, r.result, r.message, time.time(), config.settings)
    return [by_action[(a.kind, a.ctid, a.hn)] for a in p.actions]
