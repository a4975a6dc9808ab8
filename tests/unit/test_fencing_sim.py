"""The fencing design, proven on the simulator (ctmanager/sim), which drives the
daemons' own decision code: scenario folders under tests/scenarios/fencing
(event logs, diffed) and randomized fault schedules checked for the invariants."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from ctmanager.fencing.timers import FenceTimers
from ctmanager.sim import schedules
from ctmanager.sim.commands import SimError, apply, parse_cmdlist, run
from ctmanager.sim.rack import Setup, SimRack
from ctmanager.sim.scenario import play

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios" / "fencing"
NAMES = sorted(p.name for p in SCENARIOS.iterdir() if (p / "cmdlist").exists())
CI_SEEDS = range(1, int(os.environ.get("CTMANAGER_SIM_SEEDS", "60")) + 1)


@pytest.mark.parametrize("name", NAMES)
def test_scenario(name: str) -> None:
    rack = play(SCENARIOS / name)
    got = "".join(f"{line}\n" for line in rack.lines)
    expected = SCENARIOS / name / "expected.log"
    if os.environ.get("CTMANAGER_UPDATE_GOLDEN") == "1":
        expected.write_text(got)
    assert rack.violations == []
    assert got == expected.read_text(), f"tests/scenarios/fencing/{name}/expected.log"


@pytest.mark.parametrize("seed", CI_SEEDS)
def test_random_schedule_keeps_the_invariants(seed: int) -> None:
    outcome = schedules.run_seed(seed, minutes=10)
    assert outcome.ok, f"replay: python -m ctmanager sim random --seed {seed} --log\n{outcome.describe()}"


def test_the_checker_catches_unsafe_timers() -> None:
    """The invariant checks can fail: with dead_after shorter than fence_after, an
    isolated HN's CTs start elsewhere while they still run."""
    setup = dataclasses.replace(Setup(), timers=FenceTimers(fence_after=5, watchdog_timeout=10, dead_after=1.5))
    rack = SimRack(setup)
    run(rack, [(20, "network hn-101-2 off")], 40)
    assert any("UP on" in v for v in rack.violations)
    assert FenceTimers(5, 10, 15).problem().startswith("dead_after (15s) must exceed")


def test_a_failover_completes_within_dead_after_plus_a_bound() -> None:
    rack = SimRack(Setup(hns=3, cts=6))
    run(rack, [(20, "network hn-101-3 off")], 20)
    moved = sorted(c for c, hns in rack.up.items() if "hn-101-3" in hns)
    assert moved
    t = rack.timers
    rack.run_until(20 + t.dead_after + 3)  # + one report interval and a plan, + the start
    assert all(rack.up[c] and "hn-101-3" not in rack.up[c] for c in moved), rack.up


@pytest.mark.parametrize("text, error", [
    ("x network hn-101-1 off", "a line starts with a time"),
    ("5", "expected 'SECONDS COMMAND'"),
])
def test_bad_cmdlist_lines_are_named(text: str, error: str) -> None:
    with pytest.raises(SimError, match=error):
        parse_cmdlist(text)


@pytest.mark.parametrize("cmd, error", [
    ("network hn-9 off", "no node 'hn-9' \\(nodes: hn-101-1, hn-101-2, hn-101-3, manager, store\\)"),
    ("kill agent mgr-a", "no HN 'mgr-a'"),
    ("kill manager mgr-z", "no manager 'mgr-z' \\(managers: manager\\)"),
    ("explode", "unknown command"),
    ("weather gravity=2", "weather takes"),
])
def test_bad_commands_are_refused(cmd: str, error: str) -> None:
    with pytest.raises(SimError, match=error):
        apply(SimRack(Setup()), cmd)
