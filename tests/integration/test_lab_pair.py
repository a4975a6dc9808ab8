"""A manager pair on the lab rack (`lab up --managers 2`): each manager in a
network namespace of its own, one leading by the store's lease, one standing by.
The leader is killed with SIGKILL or cut off the rack network; the standby takes
over and acts, and a watcher fails the test if any CT ever runs on two HNs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labrack import ROOT, Rack, TwiceWatcher, all_up, wait_for, watched

TTL, FENCE_AFTER = 6.0, 5.0


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rack]:
    if os.geteuid() != 0 or not shutil.which("lxc-start"):
        pytest.skip("the lab needs root and LXC (bash scripts/setup.sh)")
    base = tmp_path_factory.mktemp("pair")
    env = {**os.environ, "CTMANAGER_STORE": str(base / "ctm.db"), "CTMANAGER_LAB_DIR": str(base / "rack")}

    def ctm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ctmanager", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)

    assert ctm("init", "example").returncode == 0
    up = ctm("lab", "up", "--hns", "3", "--managers", "2", "--timeout", "90")
    try:
        assert up.returncode == 0, up.stderr
        yield Rack(base / "rack" / "inventory.toml")
    finally:
        down = ctm("lab", "down")
        assert down.returncode == 0, down.stderr
        assert "ctlab-" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@pytest.fixture
def watch(pair: Rack) -> Iterator[TwiceWatcher]:
    with watched(pair, ("both managers back, one leading",
                        lambda: sorted(roles(pair).values()) == ["leader", "standby"])) as w:
        yield w


def managers(rack: Rack) -> dict[str, dict[str, Any]]:
    out = json.loads(rack.cli("manager", "status", "--json").stdout)
    return {m["name"]: m for r in out if r["rack"] == 101 for m in r["managers"]}


def tail(rack: Rack, name: str, lines: int = 8) -> str:
    return " | ".join(rack.manager_log(name).splitlines()[-lines:])


def roles(rack: Rack) -> dict[str, str]:
    return {name: m["role"] for name, m in managers(rack).items()}


def leader(rack: Rack) -> tuple[str, str]:
    """(leader, standby) once one leads."""
    got = wait_for("a leader and a standby", lambda: (r := roles(rack)) and sorted(r.values()) == ["leader", "standby"]
                   and r, timeout=3 * TTL)
    lead = next(n for n, role in got.items() if role == "leader")
    return lead, next(n for n in got if n != lead)


def test_one_leads_the_other_stands_by_warm_and_silent(pair: Rack) -> None:
    wait_for("all UP", all_up(pair), timeout=60)
    lead, standby = leader(pair)
    assert {m["name"] for m in pair.inv["managers"]} == {lead, standby} == {"mgr-101-a", "mgr-101-b"}
    view = managers(pair)
    assert view[lead]["epoch"] >= 1 and view[lead]["lease_age"] is not None and view[lead]["lease_age"] < TTL
    # the standby hears every report (the agents report to both) ...
    wait_for("the standby hears reports", lambda: (h := managers(pair)[standby]["heard"]) is not None and h < 3)
    # ... and does nothing: no action, no lease
    log = pair.manager_log(standby)
    assert "leads rack-101" not in log and " on hn-101-" not in log, log[-2000:]
    # status and hn list say who leads
    assert {r["manager"] for r in pair.status().values()} == {lead}
    assert {h["manager"] for h in json.loads(pair.cli("hn", "list", "--json").stdout)} == {lead}
    rows = [[c.strip() for c in line.split("|")] for line in pair.cli("manager", "status").stdout.splitlines()]
    assert rows[0][:3] == ["RACK", "MANAGER", "ROLE"]
    assert sorted(r[:3] for r in rows[1:]) == sorted([["rack-101", lead, "leader"], ["rack-101", standby, "standby"]])
    # every manager and agent says the version it runs (a rolling upgrade is watched by it)
    from ctmanager import __version__

    assert {m["version"] for m in managers(pair).values()} == {__version__}
    assert {h["version"] for h in json.loads(pair.cli("hn", "list", "--json").stdout)} == {__version__}


def test_the_standby_takes_over_from_a_killed_leader_and_acts(pair: Rack, watch: TwiceWatcher) -> None:
    lead, standby = leader(pair)
    epoch = managers(pair)[lead]["epoch"]
    acme = pair.status()["acme"]
    before = len(pair.manager_log(standby))
    out = pair.fault("kill-manager")
    assert f"{lead} (pid" in out and "killed" in out
    killed = time.monotonic()
    pair.cli("ct", "set", "acme", "--admst", "down")  # a change made right after the kill
    wait_for(f"{standby} stops acme", lambda: f"stop {acme['ctid']} on {acme['hn']}" in
             pair.manager_log(standby)[before:], timeout=4 * TTL)
    took = time.monotonic() - killed
    assert took < 2 * TTL, f"the standby acted {took:.1f}s after the kill"
    view = managers(pair)
    assert view[standby]["role"] == "leader" and view[standby]["epoch"] > epoch, view
    # the killed one is down once it missed three check-ins (1 s each)
    view = wait_for(f"{lead} down", lambda: (v := managers(pair))[lead]["role"] == "down" and v, timeout=10)
    assert "leads rack-101: took the lease" in pair.manager_log(standby)[before:]
    stops = [h for h in json.loads(pair.cli("ct", "history", "acme", "--json").stdout) if h["kind"] == "stop"]
    assert stops[-1]["epoch"] == view[standby]["epoch"]  # the journal says who decided it
    pair.cli("ct", "set", "acme", "--admst", "up")
    wait_for("acme UP again", lambda: pair.status()["acme"]["opst"] == "UP", timeout=30)
    assert managers(pair)[lead]["role"] == "down"  # kept down until healed (the fixture heals: then it stands by)


def test_a_leader_cut_off_from_the_hns_lets_go_and_the_standby_leads(pair: Rack, watch: TwiceWatcher) -> None:
    lead, standby = leader(pair)
    before = {n: len(pair.manager_log(n)) for n in (lead, standby)}
    out = pair.fault("partition", lead)
    assert f"{lead}: rack link" in out
    wait_for(f"{standby} leads", lambda: roles(pair)[standby] == "leader", timeout=FENCE_AFTER + 2 * TTL + 5,
             describe=lambda: f"{managers(pair)}; {lead}: {tail(pair, lead)}; {standby}: {tail(pair, standby)}")
    assert "no quorum for 5s; the lease is released" in pair.manager_log(lead)[before[lead]:]
    # the new leader acts: a CT stopped by hand is started again, by it
    acme = pair.status()["acme"]
    pair.on_hn(acme["hn"], "lxc-stop", "-P", pair.hns[acme["hn"]]["lxcpath"], "-n", str(acme["ctid"]), "-k")
    wait_for("acme restarted", lambda: f"start {acme['ctid']} on {acme['hn']}" in
             pair.manager_log(standby)[before[standby]:], timeout=30)
    assert f"start {acme['ctid']} on" not in pair.manager_log(lead)[before[lead]:]


def test_reconcile_refuses_beside_the_pair(pair: Rack) -> None:
    lead, _ = leader(pair)
    p = pair.cli("reconcile", check=False)
    assert p.returncode == 2 and f"rack-101 is led by {lead} (ctmanager run pid" in p.stderr, p.stderr


def test_a_second_run_under_the_same_name_is_refused(pair: Rack) -> None:
    first = pair.inv["managers"][0]
    p = subprocess.run([sys.executable, "-m", "ctmanager", "--store", pair.store, "run", "--config",
                        first["config"]], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert p.returncode != 0 and "a manager named mgr-101-a already runs for rack-101" in p.stderr, p.stderr
    assert Path(first["log"]).exists()
