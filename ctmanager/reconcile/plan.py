"""plan(configured, observed, placements, now) -> Plan: what to do, and why.

Pure: no I/O, no clock (`now` is an argument), inputs are only read. Level-based:
the same inputs give the same plan, and a plan that worked gives an empty next one.

Per configured CT (ADMST UP):
- it should run on its placement; a CT with no placement that runs on a usable
  HN is adopted there; no placement, or one that became unusable
  (drained, removed, rejected the CT, dead, fenced) gets a new one from the
  scheduler; when no HN can take it, it is left as it is (noted);
- a copy on another known HN is stopped (if UP) or its config destroyed (if DOWN);
- it is started on its placement only when it runs nowhere else: a CT never
  runs on two HNs at once (its /data is shared);
- OPST DOWN on its placement is a crash: start it again, unless the manager
  found it in a crash loop (`configured.crash_looped`, see manager/core.py):
  then it is left down (noted) until ops clear it (`ct reset`, `ct set --admst up`);
- UP on its placement with another spec than the configured one (the hashes
  differ, see wire.spec.spec_hash) is drift: `set` writes the new spec there and
  applies its limits live. An agent that reports no hash is left alone; a CT
  that is not running gets the new spec with its start anyway.
ADMST DOWN: stop it wherever it runs. Removed CTs: destroy them wherever they are
(/data kept unless purge). CTs nobody configured (strays) are reported, never touched.
An HN whose state is unknown (no fresh report) is never acted on, and a CT that
might be running there is left alone, until the failover logic declares that HN
dead (`observed.dead`: it has fenced itself or been reset by now). A dead HN's
CTs count as stopped and are placed elsewhere; nothing is sent to a dead HN.
A CT seen UP on two HNs at once is an alarm: fencing failed somewhere.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..dc.model import Ct
from .scheduler import Scheduler
from .state import Action, Configured, Observed, Placements, Plan, Settings


def plan(configured: Configured, observed: Observed, placements: Placements, now: float, *,
         only: Iterable[int] | None = None, settings: Settings = Settings()) -> Plan:
    """Plan for every CT, or for the CTIDs in `only` (those whose inputs changed)."""
    actions: list[Action] = []
    place: dict[int, str] = {}
    notes: list[str] = []
    alarms: list[str] = []
    sched = Scheduler(configured, observed, placements, now, settings)
    if only is None:
        ctids: Iterable[int] = sorted(configured.cts.keys() | configured.removed.keys() | observed.where.keys())
    else:
        ctids = sorted(set(only))
    ok = sched.known
    for ctid in ctids:
        ct = configured.cts.get(ctid)
        here = observed.where.get(ctid, {})
        known = {hn: opst for hn, opst in here.items() if ok[hn]}
        unknown = sorted(hn for hn in here if hn not in known and hn not in observed.dead)
        up = sorted(hn for hn, opst in known.items() if opst == "UP")
        if len(up) > 1:
            alarms.append(f"CT {ctid} is UP on {' and '.join(up)} at once: fencing failed; stopping all but one")
        if ct is None:
            if ctid in configured.removed:
                purge = configured.removed[ctid]
                actions += [Action("destroy", ctid, hn, "removed from the configuration", purge) for hn in sorted(known)]
            elif known:
                notes.append(f"stray CT {ctid} on {', '.join(sorted(known))}: nobody configured it; left alone")
            continue
        if ct.admst == "DOWN":
            why = "held down: its tenant's move is in its cutover" if ctid in configured.held else "ADMST DOWN"
            actions += [Action("stop", ctid, hn, why) for hn, opst in sorted(known.items()) if opst == "UP"]
            continue
        _plan_up(ct, known, unknown, observed, placements, now, settings, sched, actions, place, notes)
    return Plan(tuple(actions), place, tuple(notes), tuple(alarms))


def _plan_up(ct: Ct, known: dict[str, str], unknown: list[str], observed: Observed, placements: Placements,
             now: float, settings: Settings, sched: Scheduler, actions: list[Action], place: dict[int, str],
             notes: list[str]) -> None:
    ctid = ct.ctid
    target = placements.where.get(ctid)
    if target is not None and target not in known and not sched.known[target] \
            and target not in observed.dead \
            and target in sched.configured.hns and not sched.configured.hns[target].drained:
        notes.append(f"CT {ctid} waits: its HN {target} is in an unknown state")
        return
    if unknown:
        notes.append(f"CT {ctid} waits: it may still run on {', '.join(unknown)} (state unknown)")
        return
    running = [hn for hn, opst in known.items() if opst == "UP"]
    if target is None and len(running) == 1 and not _unusable(ctid, running[0], sched, placements, now):
        place[ctid] = target = running[0]  # already runs somewhere fine (e.g. a lost placement): adopt it
    problem = "" if target is None else _unusable(ctid, target, sched, placements, now)
    if target is None or problem:
        why_old = "" if target is None else f" (was {target}: {problem})"
        chosen, why = sched.choose(ct)
        if chosen is None:
            # Nowhere better: leave it as it is (running or not); stopping or
            # destroying it here would gain nothing and lose a running CT.
            notes.append(f"CT {ctid} cannot be placed: {why}")
            return
        place[ctid] = target = chosen
        reason_new = f"{why}{why_old}"
    else:
        reason_new = ""
    elsewhere_up = False
    for hn, opst in sorted(known.items()):
        if hn == target:
            continue
        if opst == "UP":
            elsewhere_up = True
            actions.append(Action("stop", ctid, hn, f"runs on {hn}, belongs on {target}"))
        else:
            actions.append(Action("destroy", ctid, hn, f"left over on {hn}, belongs on {target}"))
    if elsewhere_up:
        return  # start only once it runs nowhere else
    there = known.get(target)
    cfg = sched.configured
    if there == "UP":
        want, got = cfg.spec_hashes.get(ctid, ""), observed.spec_on(ctid, target)
        if want and got and want != got:
            # A hash says that, not what, changed; the agent's result message names the fields.
            actions.append(Action("set", ctid, target, f"drift: spec changed (runs {got[:8]}, configured {want[:8]})"))
        return
    crashes = cfg.crash_looped.get(ctid)
    if crashes is not None:
        notes.append(f"CT {ctid} left down: crash loop ({crashes} crashes in {settings.crash_window / 60:g} min); "
                     f"clear with: ctmanager ct reset {ctid}")
        return
    if there == "DOWN":
        actions.append(Action("start", ctid, target, "crashed: OPST DOWN while ADMST UP"))
    else:
        actions.append(Action("start", ctid, target, reason_new or "not running"))


def _unusable(ctid: int, hn: str, sched: Scheduler, placements: Placements, now: float) -> str:
    """Why a placement must change, or '' if it may stay."""
    cfg = sched.configured.hns.get(hn)
    if cfg is None:
        return "no longer a compute node of this rack"
    if cfg.drained:
        return "drained"
    if hn in sched.observed.dead:
        return "dead"
    report = sched.observed.reports.get(hn)
    if report is not None and report.fenced and sched.known[hn]:
        return "fenced (no quorum)"
    if report is not None and report.drained and sched.known[hn]:
        return "drained by its agent"
    if placements.rejected.get((ctid, hn), -1.0) > now:
        return "rejected it"
    return ""
