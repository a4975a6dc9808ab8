"""Cloud peering on the lab (real BIRD 2 on both sides, real BGP and BFD): the example
DC's two links to one VPC come up, a CT reaches the VPC's listener by its cloud
service name, the provider's hostile announcements are refused, a withdrawal takes
the routes away, and a cut link fails over to the other one."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from labrack import Rack, wait_for

CT = "acme"
BORDER_NS = "ctlab-border-1"
PROBE = ("python3 -c \"import socket; s = socket.create_connection(('s3', 80), 2); "
         "print(s.recv(100).decode().strip())\"")


def peering_status(rack: Rack) -> list[dict[str, Any]]:
    p = rack.cli("peering", "status", "--lab-dir", rack.inv["lab_dir"], "--json", check=False)
    return list(json.loads(p.stdout))


def border_routes() -> str:
    return subprocess.run(["ip", "netns", "exec", BORDER_NS, "ip", "route"], capture_output=True, text=True).stdout


def vpc_route() -> str:
    """The border kernel's route to the VPC ("" for none)."""
    return next((line for line in border_routes().splitlines() if line.startswith("172.31.0.0/16 ")), "")


def bird_routes(rack: Rack) -> str:
    sock = Path(rack.inv["lab_dir"]) / "border" / "border-1" / "bird.ctl"
    return subprocess.run(["birdc", "-s", str(sock), "show", "route"], capture_output=True, text=True).stdout


def reach(rack: Rack) -> str:
    p = rack.cli("ct", "exec", CT, "--", "sh", "-c", PROBE, check=False, timeout=60)
    return p.stdout.strip() if p.returncode == 0 else ""


def test_both_sessions_come_up_and_a_ct_reaches_the_vpc_by_its_service_name(rack: Rack) -> None:
    wait_for("both BGP sessions Established", lambda: all(r["up"] for r in peering_status(rack)), timeout=60)
    rows = peering_status(rack)
    assert [r["peering"] for r in rows] == ["aws-vpc1-a", "aws-vpc1-b"] and all(r["imported"] == 1 for r in rows)
    assert "via 169.254.30." in vpc_route()
    got = wait_for("acme's CT reaching s3 in the VPC", lambda: reach(rack), timeout=60, every=1)
    assert got == "cloud cloud-1 172.31.0.10"
    text = rack.cli("peering", "status", "--lab-dir", rack.inv["lab_dir"]).stdout
    assert "aws-vpc1-a" in text and "Established" in text


def test_what_the_provider_may_not_announce_is_refused(rack: Rack) -> None:
    wait_for("both sessions up", lambda: all(r["up"] for r in peering_status(rack)), timeout=60)
    before = {r["peering"]: r["refused"] for r in peering_status(rack)}
    hostile = ["10.0.0.0/16", "0.0.0.0/0", "10.101.5.0/24"]  # the DC's own, a default, a longer prefix of ours
    try:
        for prefix in hostile + ["172.31.5.0/24"]:  # and one inside the VPC, which is fine
            rack.cli("lab", "fault", "cloud-announce", "aws-vpc1-a", prefix, "--dir", rack.inv["lab_dir"])
        wait_for("the VPC's longer prefix accepted", lambda: "172.31.5.0/24" in bird_routes(rack), timeout=30)
        wait_for("three updates refused on each link", lambda: all(
            r["refused"] >= before[r["peering"]] + 3 for r in peering_status(rack)), timeout=30)
        routes, kernel = bird_routes(rack), border_routes()
        for prefix in hostile:
            assert prefix not in routes and prefix.replace("0.0.0.0/0", "default via 169.254.30") not in kernel
        assert "10.101.5.0" not in kernel and "10.0.0.0/16" not in kernel
    finally:
        for prefix in hostile + ["172.31.5.0/24"]:
            rack.cli("lab", "fault", "cloud-withdraw", "aws-vpc1-a", prefix, "--dir", rack.inv["lab_dir"])


def test_withdrawing_the_vpc_takes_its_routes_away_and_announcing_it_brings_them_back(rack: Rack) -> None:
    wait_for("acme's CT reaching s3", lambda: reach(rack), timeout=60, every=1)
    rack.cli("lab", "fault", "cloud-withdraw", "aws-vpc1-a", "172.31.0.0/16", "--dir", rack.inv["lab_dir"])
    try:
        wait_for("the VPC's route gone from the border", lambda: not vpc_route(), timeout=30)
        assert all(r["imported"] == 0 and r["up"] for r in peering_status(rack))  # sessions stay up, no routes
        assert reach(rack) == ""
    finally:
        rack.cli("lab", "fault", "cloud-announce", "aws-vpc1-a", "172.31.0.0/16", "--dir", rack.inv["lab_dir"])
    wait_for("the VPC reachable again", lambda: reach(rack), timeout=60, every=1)


def test_a_cut_link_fails_over_to_the_other_within_a_second_with_bfd(rack: Rack) -> None:
    wait_for("both sessions up", lambda: all(r["up"] for r in peering_status(rack)), timeout=60)
    wait_for("acme's CT reaching s3", lambda: reach(rack), timeout=60, every=1)
    used = "a" if "dev vl301" in vpc_route() else "b"
    cut = f"aws-vpc1-{used}"
    rack.cli("lab", "fault", "link-cut", cut, "--dir", rack.inv["lab_dir"])
    t = time.monotonic()
    try:
        other = "vl302" if used == "a" else "vl301"
        wait_for("the route over the other link", lambda: f"dev {other}" in vpc_route(), timeout=10, every=0.05)
        switched = time.monotonic() - t
        assert switched < 3, switched  # BFD: 3 x 100 ms; the benchmark measures it properly
        assert reach(rack) == "cloud cloud-1 172.31.0.10"  # from the CT, over the remaining link
        rows = {r["peering"]: r for r in peering_status(rack)}
        assert not rows[cut]["up"] and "BFD" in rows[cut]["info"], rows[cut]
    finally:
        rack.cli("lab", "fault", "heal", "--dir", rack.inv["lab_dir"])
    wait_for("the cut session back", lambda: all(r["up"] for r in peering_status(rack)), timeout=60)
