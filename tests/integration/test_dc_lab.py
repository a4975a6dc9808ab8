"""A DC lab: rack-101 and rack-102 up at once on one PostgreSQL store, each with
its own HNs and its own manager process. Each manager acts on its own rack only."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from labrack import ROOT, Rack, all_up, wait_for

RACK102 = str(ROOT / "templates/dc/manifests/rack-102.toml")


class Dc:
    def __init__(self, base: Path) -> None:
        self.r101 = Rack(base / "lab" / "inventory.toml")
        self.r102 = Rack(base / "lab" / "racks" / "rack-102" / "inventory.toml")

    def of(self, rack: Rack) -> dict[str, dict[str, object]]:
        """Status rows of one rack's CTs (status is DC-wide)."""
        mine = {int(c["ctid"]) for c in json.loads(rack.cli("ct", "list", "--rack", rack.inv["rack"], "--json").stdout)}
        return {h: r for h, r in rack.status().items() if int(r["ctid"]) in mine}  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def dc(pg_cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dc]:
    if os.geteuid() != 0 or not shutil.which("lxc-start"):
        pytest.skip("the lab needs root and LXC (bash scripts/setup.sh)")
    base = tmp_path_factory.mktemp("dclab")
    url = pg_cluster.create_database("ctm_dclab")
    env = {**os.environ, "CTMANAGER_STORE": url, "CTMANAGER_LAB_DIR": str(base / "lab")}

    def ctm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ctmanager", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=400)

    assert ctm("init", "example").returncode == 0
    assert ctm("rack", "install", "rack-102", RACK102).returncode == 0
    up = ctm("lab", "up", "--racks", "101,102", "--hns", "3", "--timeout", "150")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield Dc(base)
    finally:
        down = ctm("lab", "down")
        assert down.returncode == 0, down.stderr


def test_both_racks_come_up_each_on_its_own_hns(dc: Dc) -> None:
    for rack, prefix in ((dc.r101, "hn-101-"), (dc.r102, "hn-102-")):
        wait_for(f"{rack.inv['rack']} all UP", all_up(rack), timeout=60)
        rows = dc.of(rack)
        assert rows and all(str(r["hn"]).startswith(prefix) for r in rows.values()), rows
        assert all(hn.startswith(prefix) for hn in rack.hns)
        assert set(rack.running()) == {int(r["ctid"]) for r in rows.values()}  # type: ignore[call-overload]
    st = json.loads(dc.r101.cli("lab", "status", "--dir", dc.r101.inv["lab_dir"], "--json").stdout)
    assert [r["rack"] for r in st["racks"]] == ["rack-101", "rack-102"]
    assert all(p["alive"] for r in st["racks"] for p in r["processes"]), st
    assert {p["name"] for p in st["racks"][1]["processes"]} == {"mgr-102-a", "hn-102-1", "hn-102-2"}


def test_a_ct_added_to_rack_102_is_started_by_its_manager_and_a_drain_in_rack_101_leaves_rack_102_alone(
        dc: Dc) -> None:
    log_101 = len(dc.r101.manager_log())
    dc.r102.cli("tenant", "add", "globex", "--rack", "rack-102")
    wait_for("globex's core CT UP on a rack-102 HN", lambda: (r := dc.r102.status().get("globex")) is not None
             and r["opst"] == "UP" and str(r["hn"]).startswith("hn-102-"), timeout=90)
    ctid = dc.r102.status()["globex"]["ctid"]
    assert f"start {ctid} " in dc.r102.manager_log(), dc.r102.manager_log()[-2000:]
    assert f" {ctid} " not in dc.r101.manager_log()[log_101:]
    # a drain in rack-101: its CTs move, rack-102's stay where they are and its manager does nothing
    before_102 = {h: r["hn"] for h, r in dc.of(dc.r102).items()}
    log_102 = len(dc.r102.manager_log())
    drained = "hn-101-1"
    dc.r101.cli("hn", "drain", drained)
    try:
        wait_for(f"rack-101's CTs off {drained}", lambda: all(r["hn"] != drained and r["opst"] == "UP"
                                                               for r in dc.of(dc.r101).values()), timeout=120)
    finally:
        dc.r101.cli("hn", "undrain", drained)
    assert {h: r["hn"] for h, r in dc.of(dc.r102).items()} == before_102
    assert all(r["opst"] == "UP" for r in dc.of(dc.r102).values())
    new_102 = dc.r102.manager_log()[log_102:]
    assert not re.search(r"\b(start|stop|destroy|set) \d+ on ", new_102) and drained not in new_102, new_102[-2000:]
