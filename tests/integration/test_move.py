"""Tenant moves in a DC (rack-101 and rack-102, real LXC, sshd, rsync, BIND,
PostgreSQL): the tenant's /data goes over SSH between the racks' storage nodes
(sshd in front of ctstorage: namespaces in a DC lab, machines in the Vagrant DC,
faults through their consoles), its CTs start in the other rack
with addresses there, and DNS follows. Failures in each phase end with the
tenant online at the source, data intact, or the move finished; never a CT on
two HNs (of either rack) at once. A move out of the tenant's realm is refused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labrack import DcLab, Rack, TwiceWatcher, dc_lab, wait_for, watched


@pytest.fixture(scope="module")
def dc(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DcLab]:
    """The DC the environment names (the Vagrant DC: its rack-201 is installed with
    no machines), else a DC lab of its own."""
    given = DcLab.given()
    if given is not None:
        wait_for("every CT of both racks UP", given.all_up, timeout=300, every=1)
        yield given
        return
    if os.geteuid() != 0 or not shutil.which("lxc-start") or not shutil.which("rsync"):
        pytest.skip("the lab needs root, LXC and rsync (bash scripts/setup.sh)")
    url = request.getfixturevalue("pg_cluster").create_database("ctm_movelab")
    with dc_lab(url, tmp_path_factory.mktemp("movelab"), "rack-201") as lab:
        yield lab


@pytest.fixture
def watch(dc: DcLab) -> Iterator[TwiceWatcher]:
    """Where CTs run on all six HNs of both racks, sampled all through the test
    (rack-201 is installed, not up: its CTs stay DOWN)."""
    with watched(dc.both, up=dc.all_up, heal=False, samples=5) as w:
        yield w


def storage_node(rack: Rack) -> str:
    return str(rack.inv["storage"][0]["name"])


def data_dir(rack: Rack, ctid: int) -> Path:
    return Path(rack.inv["storage"][0]["data"]) / str(ctid)


def checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "sys_collectd" not in p.parts}


def seed(folder: Path, files: int, size: int) -> None:
    out = folder / "files"
    out.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (out / f"f{i:05d}").write_bytes(os.urandom(size))


def where(dc: DcLab, tenant: str) -> tuple[str, dict[str, Any]]:
    """The tenant's rack and its core CT's status row."""
    for rack in (dc.r101, dc.r102):
        row = rack.status().get(tenant)
        if row is not None:
            ct = json.loads(rack.cli("ct", "show", tenant, "--json").stdout)
            return str(ct["rack"]), row
    raise AssertionError(f"no tenant {tenant}")


def move(dc: DcLab, tenant: str, *args: str, timeout: float = 300) -> tuple[int, dict[str, Any]]:
    p = dc.r101.cli("tenant", "move", tenant, *args, "--wait", "--json", check=False, timeout=timeout)
    return p.returncode, json.loads(p.stdout)


def resolve(rack: Rack, ct: str, name: str) -> str:
    """What `name` resolves to inside CT `ct` (its resolv.conf, the DC's DNS)."""
    p = rack.cli("ct", "exec", ct, "--", "python3", "-c",
                 f"import socket; print(socket.gethostbyname({name!r}))", check=False)
    return p.stdout.strip()


def test_a_tenant_moves_with_its_data_while_it_writes(dc: DcLab, watch: TwiceWatcher) -> None:
    rack, row = where(dc, "acme")
    assert rack == "rack-101"
    ctid = int(row["ctid"])
    source = data_dir(dc.r101, ctid)
    seed(source, 200, 50_000)
    # a writer inside the CT appends as fast as it can, until the stop kills it
    dc.r101.cli("ct", "exec", "acme", "--", "sh", "-c",
                "nohup sh -c 'i=0; while :; do echo \"line $i\" >> /data/files/log; i=$((i+1)); done' "
                ">/dev/null 2>&1 &")
    wait_for("the writer writing", lambda: (source / "files" / "log").exists())
    code, m = move(dc, "acme", "--to", "rack-102", "--keep-source")
    assert code == 0 and m["phase"] == "online", m
    assert 2 <= m["passes"] <= 4 and m["downtime"] is not None and m["downtime"] < 30, m
    rack, row = where(dc, "acme")
    assert rack == "rack-102" and str(row["hn"]).startswith("hn-102-") and row["opst"] == "UP", row
    assert str(row["ip"]).startswith("10.102."), row
    assert int(row["ctid"]) == ctid  # same CTID
    # the CLI reaches it in rack-102 with rack-101's manager config too: the store says where it runs
    p = dc.r101.cli("ct", "exec", "acme", "--", "head", "-n", "1", "/data/files/log", check=False)
    assert p.returncode == 0 and p.stdout.startswith("line "), p.stderr
    target = data_dir(dc.r102, ctid)
    # every byte written before the stop is there: the source copy stopped changing at the stop
    lines = (source / "files" / "log").read_text().splitlines()
    assert len(lines) > 100 and lines[-1].startswith("line ")
    assert checksums(target / "files") == checksums(source / "files")
    # DNS follows, as another CT sees it: the tenant's name and its smtp route
    assert resolve(dc.r101, "initech", "acme.example.net.internal") == row["ip"]
    relays = {str(r["ip"]) for h, r in dc.r102.status().items() if h.startswith("relay-102-")}
    assert resolve(dc.r101, "initech", "smtp.acme.example.net.internal") in relays
    assert dc.r102.cli("route", "list", "--json").stdout.count('"relay-102"') >= 1
    # the source copy goes only when asked (it was kept), and then for good
    code, m = move(dc, "acme", "--delete-source")
    assert code == 0 and m["phase"] == "done", m
    assert not source.exists()
    assert checksums(target / "files")  # still there


def _rollback_ok(dc: DcLab, tenant: str, m: dict[str, Any], before: dict[str, str], ctid: int, why: str) -> None:
    assert m["phase"] == "rolled-back" and why in m["error"], m
    wait_for(f"{tenant} UP in rack-101 again", lambda: where(dc, tenant)[0] == "rack-101"
             and where(dc, tenant)[1]["opst"] == "UP", timeout=60)
    rack, row = where(dc, tenant)
    assert str(row["ip"]).startswith("10.101.") and str(row["hn"]).startswith("hn-101-")
    assert checksums(data_dir(dc.r101, ctid) / "files") == before  # the source is unchanged
    assert not any(data_dir(dc.r102, ctid).glob("files/*"))  # partial copies are gone


def test_rsync_killed_during_the_copy_rolls_back(dc: DcLab, watch: TwiceWatcher) -> None:
    _, row = where(dc, "myhost")
    ctid = int(row["ctid"])
    seed(data_dir(dc.r101, ctid), 100, 400_000)  # 40 MB at 4 MB/s: a copy of ten seconds
    before = checksums(data_dir(dc.r101, ctid) / "files")
    killed: list[str] = []

    def kill_rsync() -> None:
        def pull_running() -> bool:  # the destination's storage node pulls ("[r]": not the console's shell)
            return dc.r102.on_storage(storage_node(dc.r102), "pkill", "-KILL", "-f",
                                      f"[r]sync --archive.*/{ctid}/").returncode == 0
        wait_for("rsync copying", pull_running, timeout=60, every=0.2)
        killed.append("yes")

    t = threading.Thread(target=kill_rsync, daemon=True)
    t.start()
    code, m = move(dc, "myhost", "--to", "rack-102", "--bwlimit", "4M")
    t.join(5)
    assert killed and code == 1, m
    _rollback_ok(dc, "myhost", m, before, ctid, "rsync was killed")


def test_target_storage_full_rolls_back(dc: DcLab, watch: TwiceWatcher) -> None:
    _, row = where(dc, "myhost")
    ctid = int(row["ctid"])
    seed(data_dir(dc.r101, ctid), 10, 500_000)  # 5 MB: more than the volume below holds
    before = checksums(data_dir(dc.r101, ctid) / "files")
    target = data_dir(dc.r102, ctid)
    target.mkdir(parents=True, exist_ok=True)
    # a 2 MB volume for the CT's /data where rack-102's ctstorage sees it
    node = storage_node(dc.r102)
    p = dc.r102.on_storage(node, "mount", "-t", "tmpfs", "-o", "size=2m", "ctm-full", str(target))
    assert p.returncode == 0, p.stderr
    try:
        code, m = move(dc, "myhost", "--to", "rack-102")
        assert code == 1, m
        _rollback_ok(dc, "myhost", m, before, ctid, "target storage full")
    finally:
        dc.r102.on_storage(node, "umount", str(target))


def test_the_target_hn_rejecting_the_ct_rolls_back(dc: DcLab, watch: TwiceWatcher) -> None:
    _, row = where(dc, "myhost")
    ctid = int(row["ctid"])
    before = checksums(data_dir(dc.r101, ctid) / "files")
    r102 = dc.r102
    saved = {hn: r102.hn_read(hn, h["agent_config"]) for hn, h in r102.hns.items()}
    try:
        for hn, text in saved.items():  # every rack-102 HN now admits 1 GiB at most: myhost asks for 8
            limited = text.replace("[capacity]            # the SKU's, as on the real server\n"
                                   "memory = ", "[capacity]\nmemory = 1073741824 # ", 1)
            assert limited != text
            r102.hn_write(hn, r102.hns[hn]["agent_config"], limited)
        code, m = move(dc, "myhost", "--to", "rack-102")
        assert code == 1, m
        _rollback_ok(dc, "myhost", m, before, ctid, "rejected")
    finally:
        for hn, text in saved.items():
            r102.hn_write(hn, r102.hns[hn]["agent_config"], text)


def test_the_manager_killed_mid_cutover_finishes_the_move(dc: DcLab, watch: TwiceWatcher) -> None:
    _, row = where(dc, "myhost")
    ctid = int(row["ctid"])
    before = checksums(data_dir(dc.r101, ctid) / "files")
    p = dc.r101.cli("tenant", "move", "myhost", "--to", "rack-102", "--json")
    move_id = json.loads(p.stdout)["id"]

    def phase() -> dict[str, Any]:
        return next(x for x in json.loads(dc.r101.cli("tenant", "moves", "myhost", "--json").stdout)
                    if x["id"] == move_id)

    wait_for("the cutover", lambda: phase()["phase"] == "cutover", timeout=120, every=0.05)
    dc.r102.fault("kill-manager", "--restart")  # as systemd would
    m = wait_for("the move to end", lambda: (x := phase())["finished_at"] is not None and x, timeout=240)
    assert m["phase"] == "done", m  # the restarted manager took the cutover on from its record
    rack, row = where(dc, "myhost")
    wait_for("myhost UP in rack-102", lambda: where(dc, "myhost")[1]["opst"] == "UP", timeout=60)
    assert rack == "rack-102"
    assert checksums(data_dir(dc.r102, ctid) / "files") == before
    assert not data_dir(dc.r101, ctid).exists()


def test_abort_and_the_way_back(dc: DcLab, watch: TwiceWatcher) -> None:
    """Abort during the copy: back at the source. Then a move back to rack-101."""
    rack, row = where(dc, "myhost")
    ctid = int(row["ctid"])
    home = dc.r101 if rack == "rack-101" else dc.r102
    other = "rack-102" if rack == "rack-101" else "rack-101"
    before = checksums(data_dir(home, ctid) / "files")
    p = dc.r101.cli("tenant", "move", "myhost", "--to", other, "--bwlimit", "2M", "--json")
    move_id = json.loads(p.stdout)["id"]
    time.sleep(1.0)  # into the first pass
    code, m = move(dc, "myhost", "--abort")
    assert code == 0 and m["id"] == move_id and m["phase"] == "rolled-back" and m["error"] == "aborted by ops", m
    assert where(dc, "myhost")[0] == rack
    assert checksums(data_dir(home, ctid) / "files") == before


def test_a_move_outside_the_tenants_realm_is_refused_and_nothing_is_copied(dc: DcLab) -> None:
    p = dc.r101.cli("tenant", "move", "initech", "--to", "rack-201", check=False)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "pinned to realm 'eu-west'" in p.stderr and "us-east" in p.stderr
    assert "Traceback" not in p.stderr
    assert json.loads(dc.r101.cli("tenant", "moves", "initech", "--json").stdout) == []
    dry = dc.r101.cli("tenant", "move", "initech", "--to", "rack-201", "--dry-run", check=False)
    assert dry.returncode == 2 and "pinned to realm" in dry.stderr
    other = "rack-102" if where(dc, "acme")[0] == "rack-101" else "rack-101"
    ok = dc.r101.cli("tenant", "move", "acme", "--to", other, "--dry-run").stdout
    assert "mailstore" in ok and "not moved" in ok  # shared service data stays: said so
