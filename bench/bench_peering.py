#!/usr/bin/env python3
"""Cloud peering benchmark (issue: cloud peering), on the lab: real BIRD 2 on the
border and on the lab's provider, the example DC's two links to one VPC. Needs root.

- `lab up` (the example DC: two peerings with BFD) -> the first successful TCP
  connection from a CT (acme's) to the VPC's listener, by its service name `s3`.
- link cut -> traffic flowing over the second peering: a UDP probe inside the CT
  sends a datagram every 5 ms to the VPC's echo; the link carrying it is cut
  silently (`lab fault link-cut`: everything dropped at the provider's end, the
  carrier stays up); the outage is the gap in echoed datagrams. With BFD (100 ms x 3)
  over --runs cuts, target median <= 1 s; then, in the same run, both BIRDs
  reconfigured without BFD (BGP's hold time, 90 s, is then what notices): one cut.

Usage: python bench/bench_peering.py [--runs 5] [--no-bfd-run] [--no-record] [--smoke]
(--smoke: one cut with BFD, no cut without it; see bench/README.md)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from harness import ctm, emit, fresh_lab, parse_args  # noqa: E402
from labrack import Rack, wait_for  # noqa: E402

from ctmanager.dc import template  # noqa: E402
from ctmanager.lab import borders, layout  # noqa: E402
from ctmanager.peering import files  # noqa: E402

CT = "acme"
TCP = ("import socket; s = socket.create_connection(('s3', 80), 2); print(s.recv(100).decode().strip())")
# inside the CT: a datagram every 5 ms for SECONDS; prints the send times of those echoed
UDP = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.001)
addr = (socket.gethostbyname('s3'), 80); end = time.time() + float(sys.argv[1]); got = []; nxt = time.time()
while time.time() < end:
    if time.time() >= nxt:
        s.sendto(repr(time.time()).encode(), addr); nxt += 0.005
    try:
        got.append(float(s.recv(64)))
    except OSError:
        pass
print(json.dumps(got))
"""


def status(rack: Rack) -> list[dict[str, object]]:
    p = rack.cli("peering", "status", "--lab-dir", rack.inv["lab_dir"], "--json", check=False)
    return list(json.loads(p.stdout or "[]"))


def all_up(rack: Rack) -> bool:
    rows = status(rack)
    return bool(rows) and all(r["up"] for r in rows)


def carrying(lab: Path) -> str:
    out = subprocess.run(["ip", "netns", "exec", "ctlab-border-1", "ip", "route"], capture_output=True,
                         text=True).stdout
    line = next((x for x in out.splitlines() if x.startswith("172.31.0.0/16 ")), "")
    return "aws-vpc1-a" if "dev vl301" in line else "aws-vpc1-b"


def outage(rack: Rack, seconds: float, cut_after: float) -> float:
    """Run the probe in the CT, cut the link carrying it `cut_after` s in; the longest
    gap between echoed datagrams (s)."""
    lab = Path(rack.inv["lab_dir"])
    name = carrying(lab)
    row = rack.status()[CT]
    hn = str(row["hn"])
    # lxc-attach on its HN: `ct exec` gives up after 30 s, and the cut without BFD lasts longer
    probe = subprocess.Popen([*rack.hns[hn]["console"], "lxc-attach", "-P", rack.hns[hn]["lxcpath"], "-n",
                              str(row["ctid"]), "--", "python3", "-c", UDP, str(seconds)], stdout=subprocess.PIPE,
                             text=True)
    time.sleep(cut_after)
    rack.cli("lab", "fault", "link-cut", name, "--dir", str(lab))
    out, _ = probe.communicate(timeout=seconds + 60)
    rack.cli("lab", "fault", "heal", "--dir", str(lab))
    got = sorted(json.loads(out))
    if len(got) < 10:
        raise SystemExit(f"the probe got {len(got)} echoes: is the VPC reachable from {CT}?")
    return max(b - a for a, b in zip(got, got[1:]))


def without_bfd(rack: Rack) -> None:
    """Both sides' BIRD reconfigured with the same peerings, BFD off."""
    lab = layout.Lab(rack.inv["lab_dir"])
    dc = template.load(ROOT / "templates" / "dc" / "example.toml")
    dc = dataclasses.replace(dc, peerings=tuple(dataclasses.replace(p, bfd=None) for p in dc.peerings))
    for b in dc.borders:
        (borders.folder(lab, b.name) / "bird.conf").write_text(files.border_files(dc, b)["bird.conf"])
        subprocess.run(["birdc", "-s", str(borders.socket(lab, b.name)), "configure"], check=True,
                       capture_output=True)
    for name, ps in borders.clouds(dc):
        borders.write_cloud_config(lab, name, ps)
        subprocess.run(["birdc", "-s", str(borders.folder(lab, name) / "bird.ctl"), "configure"], check=True,
                       capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-bfd-run", action="store_true", help="skip the cut without BFD (it takes 90 s)")
    args = parse_args(ap, runs=1, no_bfd_run=True)
    base, env = fresh_lab("bench_peering")
    started = time.monotonic()
    ctm(env, "lab", "up", "--hns", "3", "--no-wait")
    rack = Rack(base / "rack" / "inventory.toml")
    try:
        def reach() -> str:
            p = rack.cli("ct", "exec", CT, "--", "python3", "-c", TCP, check=False, timeout=30)
            return p.stdout.strip() if p.returncode == 0 else ""
        wait_for(f"{CT} reaching s3 in the VPC", reach, timeout=600, every=0.5)
        first = time.monotonic() - started
        print(f"lab up -> {CT}'s first connection into the VPC: {first:.1f} s", file=sys.stderr)
        cuts = []
        for run in range(args.runs):
            wait_for("both sessions up", lambda: all_up(rack), timeout=120, every=0.5)
            cuts.append(outage(rack, 4.0, 1.0))
            print(f"run {run + 1}: outage {cuts[-1] * 1000:.0f} ms with BFD", file=sys.stderr)
        slow = None
        if not args.no_bfd_run:
            without_bfd(rack)
            wait_for("both sessions up without BFD", lambda: all_up(rack), timeout=120, every=0.5)
            slow = outage(rack, 110.0, 2.0)
            print(f"without BFD: outage {slow:.1f} s", file=sys.stderr)
    finally:
        ctm(env, "lab", "down")
    med = statistics.median(cuts)
    rows = [
        ("lab up -> a CT's first connection into the VPC", "-", f"{first:.1f} s", "recorded", "-"),
        (f"link cut -> traffic over the other link, BFD 100 ms x 3 ({len(cuts)} runs)", f"{min(cuts) * 1000:.0f} ms",
         f"{med * 1000:.0f} ms (max {max(cuts) * 1000:.0f} ms)", "<= 1 s median", "yes" if med <= 1 else "NO"),
    ]
    if slow is not None:
        rows.append(("link cut -> traffic over the other link, no BFD (hold time 90 s)", "-", f"{slow:.1f} s",
                     "reported", "-"))
    emit("cloud peering", ["Lab rack-101 (3 HNs) of the example DC: border-1 and the lab's provider each run BIRD "
                           "2.0.12; two links (veths, untagged) to one VPC 172.31.0.0/16; a UDP probe every 5 ms "
                           f"from {CT}'s CT to the VPC's echo at s3; a cut drops everything at the provider's end "
                           "(nft), the carrier stays up."], rows, record=not args.no_record, smoke=args.smoke)
    return 0 if med <= 1 or args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
