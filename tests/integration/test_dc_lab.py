"""A DC lab: rack-101 and rack-102 up at once on one PostgreSQL store, each with
its own HNs and its own manager process. Each manager acts on its own rack only."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator

import pytest
from labrack import DcLab, all_up, dc_lab, wait_for


@pytest.fixture(scope="module")
def dc(pg_cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DcLab]:
    if os.geteuid() != 0 or not shutil.which("lxc-start"):
        pytest.skip("the lab needs root and LXC (bash scripts/setup.sh)")
    with dc_lab(pg_cluster.create_database("ctm_dclab"), tmp_path_factory.mktemp("dclab")) as lab:
        yield lab


def test_both_racks_come_up_each_on_its_own_hns(dc: DcLab) -> None:
    for rack, prefix in ((dc.r101, "hn-101-"), (dc.r102, "hn-102-")):
        wait_for(f"{rack.inv['rack']} all UP", all_up(rack), timeout=60)
        rows = rack.status()
        assert rows and all(str(r["hn"]).startswith(prefix) for r in rows.values()), rows
        assert all(hn.startswith(prefix) for hn in rack.hns)
        assert set(rack.running()) == {int(r["ctid"]) for r in rows.values()}  # type: ignore[call-overload]
    st = json.loads(dc.r101.cli("lab", "status", "--dir", dc.r101.inv["lab_dir"], "--json").stdout)
    assert [r["rack"] for r in st["racks"]] == ["rack-101", "rack-102"]
    assert all(p["alive"] for r in st["racks"] for p in r["processes"]), st
    # each rack runs its own manager, HNs, storage node and that node's backup daemon, nothing of the other's
    assert {p["name"] for p in st["racks"][1]["processes"]} == {
        "mgr-102-a", "hn-102-1", "hn-102-2", "storage-102-3", "ctbackup-storage-102-3"}


def test_a_ct_added_to_rack_102_is_started_by_its_manager_and_a_drain_in_rack_101_leaves_rack_102_alone(
        dc: DcLab) -> None:
    log_101 = len(dc.r101.manager_log())
    dc.r102.cli("tenant", "add", "globex", "--rack", "rack-102")
    wait_for("globex's core CT UP on a rack-102 HN", lambda: (r := dc.r102.status().get("globex")) is not None
             and r["opst"] == "UP" and str(r["hn"]).startswith("hn-102-"), timeout=90)
    ctid = dc.r102.status()["globex"]["ctid"]
    assert f"start {ctid} " in dc.r102.manager_log(), dc.r102.manager_log()[-2000:]
    assert f" {ctid} " not in dc.r101.manager_log()[log_101:]
    # a drain in rack-101: its CTs move, rack-102's stay where they are and its manager does nothing
    before_102 = {h: r["hn"] for h, r in dc.r102.status().items()}
    log_102 = len(dc.r102.manager_log())
    drained = "hn-101-1"
    dc.r101.cli("hn", "drain", drained)
    try:
        wait_for(f"rack-101's CTs off {drained}", lambda: all(r["hn"] != drained and r["opst"] == "UP"
                                                               for r in dc.r101.status().values()), timeout=120)
    finally:
        dc.r101.cli("hn", "undrain", drained)
    assert {h: r["hn"] for h, r in dc.r102.status().items()} == before_102
    assert all(r["opst"] == "UP" for r in dc.r102.status().values())
    new_102 = dc.r102.manager_log()[log_102:]
    assert not re.search(r"\b(start|stop|destroy|set) \d+ on ", new_102) and drained not in new_102, new_102[-2000:]
