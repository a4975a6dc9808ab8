"""A leader that took over waits, for each action its predecessor left in
flight, until that HN reports the new epoch *settled*: the agent has seen it (so
it refuses anything older) and no action of an older epoch still runs there.
Proved by the agent's markers of running actions, not by a timer; the deadline
(action_timeout) is only for an HN that cannot say so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from ctmanager.agent.daemon import Agent
from ctmanager.agent.node import DiskNode
from ctmanager.fencing.timers import FenceTimers
from ctmanager.manager.core import RUNNING, Core
from ctmanager.reconcile.state import Configured, Hn, Placements, Settings
from ctmanager.wire.reports import Metrics, Report

G = 1 << 30


def node(tmp_path: Path) -> DiskNode:
    return DiskNode(SimpleNamespace(state_dir=str(tmp_path)))  # type: ignore[arg-type]


def settled(n: DiskNode, seen: int) -> int:
    return Agent.settled(SimpleNamespace(node=n, epoch=seen, config=SimpleNamespace(state_dir="x")))  # type: ignore[arg-type]


def test_an_older_action_still_running_holds_the_settled_epoch_back(tmp_path: Path) -> None:
    n = node(tmp_path)
    assert n.oldest_applying() is None and settled(n, 7) == 7
    with n.applying(1005, 6):  # the old leader's start, under the CT's lock, while epoch 7 is heard
        assert (tmp_path / "applying" / "1005").read_text().split() == ["6", str(os.getpid())]
        assert n.oldest_applying() == 6 and settled(n, 7) == 6
        with n.applying(1006, 7):
            assert n.oldest_applying() == 6
    assert n.oldest_applying() is None and settled(n, 7) == 7
    assert not (tmp_path / "applying" / "1005").exists()


def test_a_marker_of_a_process_that_died_is_ignored(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (tmp_path / "applying").mkdir()
    (tmp_path / "applying" / "1005").write_text(f"3 {dead}\n")
    (tmp_path / "applying" / "1006").write_text("garbage\n")
    n = node(tmp_path)
    assert n.oldest_applying() is None and settled(n, 7) == 7


def report(hn: str, seq: int, epoch: int, at: float) -> Report:
    return Report(101, hn, "0123456789abcdef", seq, at, False, Metrics(0.1, 64 * G, 60 * G, G, G, 0), (),
                  epoch=epoch)


def core() -> Core:
    cfg = Configured({}, {"hn-101-1": Hn("hn-101-1", 64 * G, G), "hn-101-2": Hn("hn-101-2", 64 * G, G)})
    return Core(cfg, Placements({}), Settings(), FenceTimers(), 0.0)


def test_a_predecessors_action_keeps_its_ct_busy_until_its_hn_settled_the_epoch() -> None:
    c = core()
    c.await_settled([(1005, "hn-101-1"), (1006, "hn-101-2")], epoch=8, deadline=100.0)
    assert c.busy == {(1005, "hn-101-1"): RUNNING, (1006, "hn-101-2"): RUNNING}
    c.heard(report("hn-101-1", 1, 7, 1.0), 1.0)  # it has not settled epoch 8 yet: an older action may run
    c.heard(report("hn-101-2", 1, 8, 1.0), 1.0)  # this one has
    assert c.busy == {(1005, "hn-101-1"): RUNNING}
    assert c.heard(report("hn-101-1", 2, 9, 2.0), 2.0) >= {1005} and c.busy == {}


def test_an_hn_that_cannot_say_so_is_waited_for_until_the_deadline() -> None:
    c = core()
    c.await_settled([(1005, "hn-101-1")], epoch=8, deadline=30.0)
    c.heard(report("hn-101-1", 1, 0, 1.0), 1.0)  # an older agent: no epoch in its reports
    assert c.expire(29.0) == set() and (1005, "hn-101-1") in c.busy
    assert c.expire(30.0) == {1005} and c.busy == {}
