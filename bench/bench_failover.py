#!/usr/bin/env python3
"""Lab failover benchmark (issue: fencing and failover), on real LXC CTs. Needs root.

With the default timers (fence_after 5 s, watchdog_timeout 10 s, dead_after 16 s):
take the busiest HN's rack link down (`ctmanager lab fault partition`) and time
until every CT that ran there is started on another HN: from the moment the
link went down to the manager's last `start ... done` for those CTs (its log
timestamps, same clock). Then heal, wait for the leftovers to be destroyed, and
repeat. Median over >= 5 runs; target <= 20 s.

Usage: python bench/bench_failover.py [--runs 5] [--no-record] [--smoke]
(--smoke: one run; see bench/README.md)
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from harness import ctm, emit, fresh_lab, parse_args
from labrack import Rack, all_up, wait_for


def done_at(log: str, ctid: int, hn: str) -> float | None:
    for line in log.splitlines():
        if f"start {ctid} on " in line and ": done" in line and f" on {hn}:" not in line:
            return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    args = parse_args(ap, runs=1)
    base, env = fresh_lab("bench_failover")
    ctm(env, "lab", "up", "--hns", "3")
    rack = Rack(base / "rack" / "inventory.toml")
    times: list[float] = []
    moved_counts: list[int] = []
    try:
        for run in range(args.runs):
            wait_for("all UP", all_up(rack), timeout=60)
            where = rack.running()
            counts = {h: sum(h in hns for hns in where.values()) for h in sorted(rack.hns)}
            hn = max(counts, key=lambda h: counts[h])
            moved = sorted(c for c, hns in where.items() if hn in hns)
            offset = len(rack.manager_log())
            cut = time.time()
            rack.fault("partition", hn)
            stamps = wait_for("every moved CT started elsewhere", lambda: (
                s := [done_at(rack.manager_log()[offset:], c, hn) for c in moved]) and all(s) and s, timeout=60)
            times.append(max(stamps) - cut)
            moved_counts.append(len(moved))
            print(f"run {run + 1}: {hn} down, {len(moved)} CTs UP elsewhere after {times[-1]:.1f} s", file=sys.stderr)
            rack.fault("heal", hn)
            wait_for(f"leftovers on {hn} destroyed", lambda: not rack.on_hn(
                hn, "lxc-ls", "-P", rack.hns[hn]["lxcpath"]).stdout.split(), timeout=30)
    finally:
        ctm(env, "lab", "down")
    med = statistics.median(times)
    rows = [(f"HN link down -> all its CTs UP elsewhere ({len(times)} runs, {min(moved_counts)}-{max(moved_counts)} "
             "CTs each)", f"{min(times):.1f} s", f"{med:.1f} s (max {max(times):.1f} s)", "<= 20 s median",
             "yes" if med <= 20 else "NO")]
    emit("failover", ["Lab rack-101, 3 HNs + manager (4 voters); defaults fence_after 5 s, watchdog_timeout 10 s, "
                      "dead_after 16 s, report_interval 1 s."], rows, record=not args.no_record, smoke=args.smoke)
    return 0 if med <= 20 or args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
