"""Fencing and failover on the real lab rack: links cut, agents and the manager
killed with SIGKILL, partitions healed. Timers are the defaults (fence_after 5 s,
watchdog_timeout 10 s, dead_after 16 s). Throughout, a watcher samples every HN's
runtime and fails the test if any CT ever runs on two HNs at once."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest
from labrack import Rack, TwiceWatcher, wait_for, watched

FENCE_AFTER, WATCHDOG, DEAD_AFTER = 5.0, 10.0, 16.0


@pytest.fixture
def watch(rack: Rack) -> Iterator[TwiceWatcher]:
    with watched(rack) as w:
        yield w


def on(rack: Rack, hn: str) -> list[int]:
    return sorted(c for c, hns in rack.running().items() if hn in hns)


def busiest(rack: Rack) -> str:
    counts = {h: 0 for h in rack.hns}
    for hns in rack.running().values():
        for h in hns:
            counts[h] += 1
    return max(sorted(counts), key=lambda h: counts[h])


def test_an_hn_that_loses_its_link_fences_and_its_cts_start_elsewhere(rack: Rack, watch: TwiceWatcher) -> None:
    hn = busiest(rack)
    moved = on(rack, hn)
    cut = time.monotonic()
    rack.fault("partition", hn)
    # the HN hears nobody: it stops its CTs itself within fence_after (+ a round, + the stops)
    wait_for(f"{hn} fenced, its CTs stopped", lambda: not on(rack, hn), timeout=FENCE_AFTER + 5)
    fenced_in = time.monotonic() - cut
    # it fences one report round early, so a peer may still count as in contact at that moment
    assert re.search(r"FENCED: in contact with [12] of 4 voters", rack.hn_log(hn)), rack.hn_log(hn)[-2000:]
    # the manager waits dead_after, then starts them on the others
    status = wait_for("moved CTs UP elsewhere", lambda: (s := rack.status()) and all(
        r["hn"] != hn and r["opst"] == "UP" for r in s.values() if r["ctid"] in moved) and s,
        timeout=DEAD_AFTER + 15)
    failover = time.monotonic() - cut
    assert failover >= DEAD_AFTER - 1, f"CTs moved after {failover:.1f}s, before dead_after"
    assert f"{hn} is DEAD" in rack.manager_log()
    assert fenced_in < FENCE_AFTER + 3
    assert all(status[n]["hn"] != hn for n in status if status[n]["ctid"] in moved)


def test_a_killed_agent_is_reset_by_its_watchdog_and_its_cts_move(rack: Rack, watch: TwiceWatcher) -> None:
    hn = busiest(rack)
    moved = on(rack, hn)
    rack.fault("kill-agent", hn)
    # nothing fences a dead agent's CTs but the watchdog: they run until it fires
    time.sleep(WATCHDOG / 2)
    assert on(rack, hn) == moved
    wait_for(f"the watchdog of {hn} killing its CTs", lambda: not on(rack, hn), timeout=WATCHDOG + 3)
    wait_for("its CTs UP elsewhere", lambda: all(
        r["hn"] != hn and r["opst"] == "UP" for r in rack.status().values() if r["ctid"] in moved), timeout=DEAD_AFTER)


def test_a_manager_killed_mid_apply_is_restarted_and_converges_without_duplicates(rack: Rack,
                                                                                  watch: TwiceWatcher) -> None:
    status = rack.status()
    ct = status["acme"]
    target = sorted(h for h in rack.hns if h != ct["hn"])[0]
    before = len(rack.manager_log())
    moved_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    rack.cli("ct", "move", "acme", "--to", target)
    wait_for("the move under way", lambda: f"stop {ct['ctid']} on {ct['hn']}" in rack.manager_log()[before:],
             timeout=10, every=0.01)
    rack.fault("kill-manager", "--restart")  # as systemd would
    wait_for("acme UP on its new HN", lambda: (r := rack.status()["acme"])["hn"] == target and r["opst"] == "UP",
             timeout=30)
    assert rack.running()[ct["ctid"]] == {target}
    # the old HN's copy (down) is destroyed beside the start, and may finish a moment after it
    wait_for("nothing left to do", lambda: rack.cli("plan").stdout.strip() == "nothing to do", timeout=15)
    # started there once, by whichever manager led (with a pair the standby may have finished the move)
    history = json.loads(rack.cli("ct", "history", "acme", "--json").stdout)
    done = [h for h in history if h["kind"] == "start" and h["hn"] == target and h["state"] == "done"
            and h["at"] >= moved_at]
    assert len(done) == 1 and done[0]["epoch"] > 0, history


def test_healing_a_partition_never_runs_a_ct_twice(rack: Rack, watch: TwiceWatcher) -> None:
    hn = busiest(rack)
    moved = on(rack, hn)
    rack.fault("partition", hn)
    wait_for("its CTs UP elsewhere", lambda: all(
        r["hn"] != hn and r["opst"] == "UP" for r in rack.status().values() if r["ctid"] in moved),
        timeout=DEAD_AFTER + 15)
    rack.fault("heal", hn)
    wait_for(f"{hn} back", lambda: f"{hn} is back" in rack.manager_log(), timeout=10)
    wait_for(f"leftovers on {hn} destroyed", lambda: not rack.on_hn(
        hn, "lxc-ls", "-P", rack.hns[hn]["lxcpath"]).stdout.split(), timeout=15)
    assert all(len(hns) == 1 for hns in rack.running().values())


def test_an_agent_restart_leaves_its_cts_running_and_fences_nothing(rack: Rack, watch: TwiceWatcher) -> None:
    """What an upgrade does (`systemctl restart ctagent`): SIGTERM, and the supervisor starts
    it again. Its CTs keep their processes; nobody fences or moves anything, for longer than
    dead_after."""
    hn = busiest(rack)
    kept = on(rack, hn)
    pattern = f"ctagent -c {rack.hns[hn]['agent_config']} run"

    def agent_pid() -> str:
        return rack.on_hn(hn, "pgrep", "-f", pattern).stdout.strip()

    old = wait_for(f"{hn}'s agent", agent_pid, timeout=10)
    log_at, hn_log_at = len(rack.manager_log()), len(rack.hn_log(hn))
    rack.on_hn(hn, "pkill", "-TERM", "-f", pattern)
    wait_for(f"{hn}'s agent started again", lambda: (pid := agent_pid()) and pid != old, timeout=10)
    deadline = time.monotonic() + DEAD_AFTER + 4
    while time.monotonic() < deadline:  # nothing may happen: checked all along, not only at the end
        assert on(rack, hn) == kept, f"{hn}'s CTs changed after an agent restart"
        time.sleep(0.5)
    new_log = rack.manager_log()[log_at:]
    assert f"{hn} is DEAD" not in new_log and not re.search(rf"(start|stop) \d+ on {hn}", new_log), new_log[-2000:]
    assert "FENCED" not in rack.hn_log(hn)[hn_log_at:]
