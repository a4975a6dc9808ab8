#!/usr/bin/env python3
"""Simulator benchmark (issue: fencing and failover).

Runs >= 1,000 randomized fault schedules of 10 simulated minutes each
(ctmanager/sim/schedules.py: partitions, one-way cuts, loss, duplication,
jitter, killed agents, hung runtimes, power cuts, manager restarts) on all
cores, and checks the invariants on every one. Target: <= 60 s wall time,
zero violations. A failing seed is printed with its schedule; replay it with
`python -m ctmanager sim random --seed N --log`.

Usage: python bench/bench_sim.py [--schedules 1000] [--minutes 10] [--no-record] [--smoke]
(--smoke: 2 schedules; an invariant violation still fails it, the wall time does not;
see bench/README.md)
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import emit, parse_args

from ctmanager.sim.schedules import SeedOutcome, run_seed


def one(seed: int) -> SeedOutcome:
    return run_seed(seed, MINUTES)


MINUTES = 10.0


def main() -> int:
    global MINUTES
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--schedules", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--against", metavar="CHECKOUT", help="also run the same seeds with another checkout's "
                    "simulator (e.g. a worktree of the previous commit) in the same run, and report the ratio")
    args = parse_args(ap, schedules=2)
    logging.disable(logging.WARNING)  # the daemons' own log lines (a restarted manager resuming, ...)
    if args.against:
        return against(args)
    MINUTES = args.minutes
    seeds = range(args.first_seed, args.first_seed + args.schedules)
    started = time.perf_counter()
    with Pool(os.cpu_count() or 1) as pool:
        outcomes = pool.map(one, seeds, chunksize=8)
    wall = time.perf_counter() - started
    bad = [o for o in outcomes if not o.ok]
    for o in bad[:3]:
        print(o.describe(), file=sys.stderr)
    delivered = sum(o.delivered for o in outcomes)
    actions = sum(o.actions for o in outcomes)
    rows = [(f"{args.schedules} schedules x {args.minutes:g} simulated min, {os.cpu_count()} processes",
             f"{wall:.1f} s", f"{wall:.1f} s", "<= 60 s", "yes" if wall <= 60 else "no"),
            ("invariant violations / schedules not converged", f"{sum(len(o.violations) > 0 for o in bad)}",
             f"{sum(len(o.not_converged) > 0 for o in bad)}", "0 / 0", "yes" if not bad else "no")]
    emit("simulator", [f"Seeds {seeds.start}-{seeds.stop - 1}; {delivered:,} datagrams delivered, "
                       f"{actions:,} manager actions in all."], rows, record=not args.no_record, smoke=args.smoke)
    return 0 if not bad and (wall <= 60 or args.smoke) else 1


def timed(checkout: Path, first: int, count: int, minutes: float) -> float:
    """Wall seconds of `count` schedules with `checkout`'s simulator, in a fresh interpreter."""
    code = ("import os, sys, time; sys.path.insert(0, sys.argv[1]); import logging; logging.disable(logging.WARNING);"
            "from multiprocessing import Pool; from ctmanager.sim.schedules import run_seed;"
            "import ctmanager; assert ctmanager.__file__.startswith(sys.argv[1]), ctmanager.__file__;"
            "f, n, m = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]); t = time.perf_counter();"
            "p = Pool(os.cpu_count() or 1); bad = sum(not o.ok for o in p.starmap(run_seed, [(s, m) for s in "
            "range(f, f + n)], chunksize=8)); print(time.perf_counter() - t, bad)")
    out = subprocess.run([sys.executable, "-c", code, str(checkout.resolve()), str(first), str(count), str(minutes)],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0])


def against(args: argparse.Namespace) -> int:
    """This checkout against another, interleaved (the machine is shared and noisy)."""
    other = Path(args.against)
    ours, theirs = [], []
    for _ in range(3):
        theirs.append(timed(other, args.first_seed, args.schedules, args.minutes))
        ours.append(timed(ROOT, args.first_seed, args.schedules, args.minutes))
    ratio = statistics.median(ours) / statistics.median(theirs)
    rows = [(f"{args.schedules} schedules x {args.minutes:g} min, this checkout", f"{min(ours):.1f} s",
             f"{statistics.median(ours):.1f} s", "", ""),
            (f"the same with {other}", f"{min(theirs):.1f} s", f"{statistics.median(theirs):.1f} s", "", ""),
            ("ratio this / that (medians)", f"{min(ours) / min(theirs):.2f}", f"{ratio:.2f}", "<= 1.00",
             "yes" if ratio <= 1.0 else "no")]
    emit("simulator, same run against another checkout", [], rows, record=not args.no_record, smoke=args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
