#!/usr/bin/env python3
"""Simulator benchmark (issues: fencing and failover; moves inside the loop).

Runs >= 1,000 randomized schedules of 10 simulated minutes each on all cores and
checks the invariants on every one. By default (`--kind dc`) each is a DC of two
racks on one store (ctmanager/sim/dcschedules.py): the real manager pairs and
agents among partitions, one-way cuts, loss, duplication, jitter, clock skew,
killed agents and managers, hung runtimes, power cuts, store outages and
stalls between deciding and recording, mixed with ops commands: tenant moves
both ways, aborts, `ct set --admst`, drains. Target: <= 120 s wall time on 2
cores, zero violations, every schedule converged (every move ended). `--kind
rack` runs the one-rack schedules of the fencing issue (target 60 s then).
A failing seed is printed with its schedule.

Usage: python bench/bench_sim.py [--kind dc|rack] [--schedules 1000] [--minutes 10] [--no-record] [--smoke]
(--smoke: 2 schedules; an invariant violation still fails it, the wall time does not;
see bench/README.md)
"""

from __future__ import annotations

import argparse
import collections
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

from ctmanager.sim import dcschedules, schedules
from ctmanager.sim.schedules import SeedOutcome

TARGET = {"dc": 120.0, "rack": 60.0}
MINUTES = 10.0
KIND = "dc"


def one(seed: int) -> SeedOutcome:
    logging.disable(logging.WARNING)  # the daemons' own log lines (a restarted manager resuming, ...)
    return (dcschedules if KIND == "dc" else schedules).run_seed(seed, MINUTES)


def init(kind: str, minutes: float) -> None:
    global KIND, MINUTES
    KIND, MINUTES = kind, minutes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=("dc", "rack"), default="dc")
    ap.add_argument("--schedules", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--against", metavar="CHECKOUT", help="also run the same seeds with another checkout's "
                    "simulator (e.g. a worktree of the previous commit) in the same run, and report the ratio "
                    "(one-rack schedules)")
    args = parse_args(ap, schedules=2)
    logging.disable(logging.WARNING)
    if args.against:
        return against(args)
    seeds = range(args.first_seed, args.first_seed + args.schedules)
    started = time.perf_counter()
    with Pool(os.cpu_count() or 1, initializer=init, initargs=(args.kind, args.minutes)) as pool:
        outcomes = pool.map(one, seeds, chunksize=8)
    wall = time.perf_counter() - started
    bad = [o for o in outcomes if not o.ok]
    for o in bad[:3]:
        print(o.describe(), file=sys.stderr)
    delivered = sum(o.delivered for o in outcomes)
    actions = sum(o.actions for o in outcomes)
    target = TARGET[args.kind]
    what = "DC of 2 racks, tenant moves and ops commands" if args.kind == "dc" else "one rack"
    rows = [(f"{args.schedules} schedules x {args.minutes:g} simulated min ({what}), {os.cpu_count()} processes",
             f"{wall:.1f} s", f"{wall:.1f} s", f"<= {target:g} s", "yes" if wall <= target else "no"),
            ("invariant violations / schedules not converged", f"{sum(len(o.violations) > 0 for o in bad)}",
             f"{sum(len(o.not_converged) > 0 for o in bad)}", "0 / 0", "yes" if not bad else "no")]
    notes = [f"Seeds {seeds.start}-{seeds.stop - 1}; {delivered:,} datagrams delivered, {actions:,} manager actions "
             "in all."]
    moved = collections.Counter(m for o in outcomes for m in o.moves)
    if moved:
        notes.append("Moves: " + ", ".join(f"{n:,} {end}" for end, n in sorted(moved.items())) + ".")
    emit("simulator", notes, rows, record=not args.no_record, smoke=args.smoke)
    return 0 if not bad and (wall <= target or args.smoke) else 1


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
