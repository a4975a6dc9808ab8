"""The fencing decisions, rule by rule (the simulator tests them in combination)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctmanager.errors import InputError
from ctmanager.fencing.failover import Failover
from ctmanager.fencing.guard import FenceGuard
from ctmanager.fencing.quorum import MANAGER, Membership, is_quorum
from ctmanager.fencing.timers import FenceTimers
from ctmanager.manager import config as mconfig
from tests.conftest import manager_toml

HNS = frozenset({"hn-1", "hn-2", "hn-3"})
VOTERS = HNS | {MANAGER}


def member(me: str, now: float = 0.0, window: float = 5.0) -> Membership:
    return Membership(me, VOTERS, window, now)


def mutual(m: Membership, other: str, at: float) -> None:
    """`other` sends at `at`, saying it heard m.me just now."""
    m.hear(other, at, at, {m.me: 0.0})


@pytest.mark.parametrize("side, quorum", [
    ({"hn-1", "hn-2", "hn-3"}, True),          # 3 of 4
    ({"hn-1", MANAGER}, True),                 # half, with the manager
    ({"hn-1", "hn-2"}, False),                 # half, without it
    ({MANAGER}, False),
    ({"hn-1", "stranger", "other"}, False),    # only voters count
])
def test_quorum_is_a_majority_or_half_with_the_manager(side: set[str], quorum: bool) -> None:
    assert is_quorum(side, VOTERS) is quorum


def test_contact_counts_only_when_both_sides_hear_each_other() -> None:
    m = member("hn-1")
    m.hear("hn-2", 1.0, 1.0, {})  # hn-2 does not hear us: our reports are lost on the way
    m.hear("hn-3", 1.0, 1.0, {"hn-2": 0.1})
    assert m.connected(1.5) == set() and not m.quorum(1.5)
    mutual(m, "hn-2", 2.0)
    mutual(m, MANAGER, 2.0)
    assert m.connected(2.5) == {"hn-2", MANAGER} and m.quorum(2.5)
    assert not m.quorum(7.5)  # fence_after (5 s) after the last mutual contact


def test_a_stale_report_of_contact_does_not_extend_it() -> None:
    """hn-2 says, at 10, that it heard us 4 s ago: the contact dates from 6, not 10."""
    m = member("hn-1")
    m.hear("hn-2", 10.0, 10.0, {"hn-1": 4.0})
    assert m.mutual_at["hn-2"] == 6.0


def test_gossip_is_evidence_that_an_hn_lives() -> None:
    m = member(MANAGER, now=0.0)
    assert m.evidence("hn-3") == 0.0  # nothing heard: the manager's start counts
    m.hear("hn-1", 30.0, 30.0, {"hn-3": 0.5, MANAGER: 0.2})
    assert m.evidence("hn-3") == 29.5 and m.evidence("hn-1") == 30.0
    assert m.hears(31.0) == {"hn-1": 1.0}


def test_the_guard_fences_one_round_early_and_pets_only_when_safe() -> None:
    m = member("hn-1")
    guard = FenceGuard(m, started=0.0, lookahead=1.0)
    assert guard.step(2.0, {7}).pet  # just started: one fence_after of grace
    for other in ("hn-2", MANAGER):
        mutual(m, other, 5.0)
    ok = guard.step(8.9, {7})
    assert (ok.fenced, ok.stop, ok.pet) == (False, (), True)
    late = guard.step(9.1, {7, 8})  # contact at 5 expires at 10: 9.1 + 1 s lookahead is past it
    assert (late.fenced, late.stop, late.pet) == (True, (7, 8), False)
    assert late.news.startswith("FENCED: in contact with 1 of 4 voters")
    assert guard.step(10.0, set()).pet  # all stopped: safe to pet again
    mutual(m, "hn-2", 11.0)
    mutual(m, "hn-3", 11.0)
    back = guard.step(11.5, set())
    assert not back.fenced and back.news.startswith("quorum regained")


def test_an_hn_is_dead_only_after_dead_after_of_silence_with_steady_quorum() -> None:
    m = member(MANAGER, now=0.0)
    f = Failover(m, dead_after=16.0)
    for t in range(0, 40):
        for hn in ("hn-1", "hn-2"):
            mutual(m, hn, float(t))
        view = f.step(t + 0.5, HNS)
        if t + 0.5 < 16:
            assert view.dead == frozenset(), t  # the manager's own start is the evidence
    assert view.dead == {"hn-3"} and view.quorum
    assert not f.step(60.0, HNS).quorum  # nobody heard since 39: no quorum ...
    assert f.dead == frozenset()  # ... and then nobody is declared dead


def test_a_fence_command_confirms_a_node_off_sooner() -> None:
    m = member(MANAGER)
    f = Failover(m, dead_after=16.0)
    for hn in ("hn-1", "hn-2"):
        mutual(m, hn, 2.0)
    m.hear("hn-3", 1.0, 1.0, {})
    f.confirm_off("hn-3", 2.5)
    view = f.step(3.0, HNS)
    assert view.dead == {"hn-3"} and "a fence command confirmed it off" in view.news[-1]


def test_unsafe_timers_are_refused_in_the_config(tmp_path: Path) -> None:
    conf = manager_toml(tmp_path, "[fencing]\nfence_after = 5\nwatchdog_timeout = 10\ndead_after = 12\n")
    with pytest.raises(InputError, match=r"fencing.dead_after: dead_after \(12s\) must exceed"):
        mconfig.load(conf)
    assert FenceTimers().problem() == ""


def test_the_fence_command_runs_with_the_hn_filled_in_and_its_secrets_unlogged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import queue
    import sys

    from ctmanager.manager.ports import CommandFencer, LogEvents

    out = tmp_path / "fenced"
    argv = (sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write(' '.join(sys.argv[2:]))",
            str(out), "{hn}", "{ip}", "--password=hunter2")
    done: queue.Queue[tuple[str, int, str]] = queue.Queue()
    with caplog.at_level("INFO"):
        LogEvents().fencing("hn-2", 5.0, argv[0])
        CommandFencer(argv).fence("hn-2", "10.101.1.2", lambda *r: done.put(r))
        hn, rc, _ = done.get(timeout=30)
    assert (hn, rc) == ("hn-2", 0)
    assert out.read_text() == "hn-2 10.101.1.2 --password=hunter2"
    assert "hn-2 silent for 5s: running the fence command" in caplog.text
    assert "hunter2" not in caplog.text


def test_a_fence_command_is_asked_once_per_silence_and_never_without_quorum() -> None:
    m = member(MANAGER)
    f = Failover(m, dead_after=16.0)
    for hn in ("hn-1", "hn-2"):
        mutual(m, hn, 6.0)
    f.step(6.0, HNS)
    assert f.to_fence(6.0, HNS, after=5.0) == ["hn-3"]  # silent since the start (0)
    assert f.to_fence(6.5, HNS, after=5.0) == []  # asked already
    m.hear("hn-3", 7.0, 7.0, {})
    for hn in ("hn-1", "hn-2"):
        mutual(m, hn, 12.0)
    assert f.to_fence(12.5, HNS, after=5.0) == ["hn-3"]  # heard at 7, silent again for 5 s
    lonely = Failover(member(MANAGER), dead_after=16.0)
    lonely.step(30.0, HNS)
    assert lonely.to_fence(30.0, HNS, after=5.0) == []
