#!/usr/bin/env python3
"""Lab benchmarks (issue: agent + reconcile loop), on real LXC CTs. Needs root.

  - `ctmanager lab up` of 3 HNs x 10 CTs (the example rack's 8 + 2), cold (no lab running),
    whole process time until every CT is UP | UP;
  - CT death -> restart command issued: kill a CT's init (SIGKILL, like a crash),
    time until the manager logs the `start ... crashed` action, over >= 20 kills:
    median <= 1 s. The manager's log timestamps have millisecond resolution and
    come from the same clock as the kill time.

Usage: python bench/bench_lab.py [--kills 20] [--no-record] [--smoke]
(--smoke: 2 kills; see bench/README.md)
Takes down any lab first; leaves none behind.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from harness import ctm, emit, fresh_lab, parse_args
from labrack import Rack, wait_for


def crash_lines(log: str, ctid: int, hn: str) -> list[float]:
    """Timestamps of the manager's restart decisions for a CT."""
    out = []
    for line in log.splitlines():
        if f"start {ctid} on {hn}: crashed" in line:
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            out.append(stamp.timestamp())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    args = parse_args(ap, kills=2)
    base, env = fresh_lab("bench_lab")
    for n in (1, 2):  # the example rack has 8 CTs; the issue times 3 HNs x 10
        ctm(env, "ct", "add", f"build-101-{n}", "--rack", "rack-101", "--memory", "1G")
    started = time.monotonic()
    ctm(env, "lab", "up", "--hns", "3")
    up_seconds = time.monotonic() - started
    rack = Rack(base / "rack" / "inventory.toml")
    n_cts = len(rack.status())
    delays = []
    try:
        targets = sorted(rack.status().values(), key=lambda r: r["ctid"])
        for i in range(args.kills):
            ct = targets[i % len(targets)]
            hn, ctid = ct["hn"], ct["ctid"]
            wait_for("the CT UP", lambda: rack.status()[ct["hostname"]]["opst"] == "UP", timeout=30)
            before = len(crash_lines(rack.manager_log(), ctid, hn))
            pid = wait_for("the CT's init", lambda: rack.init_pid(hn, ctid), timeout=30)
            killed = time.time()
            os.kill(pid, 9)
            stamps = wait_for("the restart decision",
                              lambda: (s := crash_lines(rack.manager_log(), ctid, hn))[before:] and s, timeout=30)
            delays.append(stamps[before] - killed)
            wait_for("the CT running again", lambda: rack.lxc_state(hn, ctid) == "RUNNING", timeout=30)
    finally:
        ctm(env, "lab", "down")
    med = statistics.median(delays)
    rows = [
        [f"CT death -> restart issued ({len(delays)} kills, {n_cts} CTs on 3 HNs)", f"{min(delays) * 1000:.0f} ms",
         f"{med * 1000:.0f} ms (max {max(delays) * 1000:.0f} ms)", "<= 1 s median", "yes" if med <= 1 else "NO"],
        [f"lab up, cold: 3 HNs x {n_cts} CTs until all UP|UP", f"{up_seconds:.1f} s", f"{up_seconds:.1f} s",
         "(recorded)", "-"],
    ]
    emit("lab", ["Real LXC CTs in HN namespaces; report_interval 1 s; the agent wakes on lxc-monitor events."],
         rows, record=not args.no_record, smoke=args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
