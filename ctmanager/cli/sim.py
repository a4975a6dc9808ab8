"""`ctmanager sim run DIR` and `ctmanager sim random`: the fault simulator from the CLI,
to rehearse a failure on paper or replay a failing seed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError
from .common import Registry, integer_in, seconds_in, want_json
from .output import emit_json


def register(reg: Registry) -> None:
    cmd, group = reg.cmd, reg.group
    sims = group("sim", "the fencing simulator: the manager's and agents' own decision code on a simulated rack")
    p = cmd(sims, "run", cmd_sim_run, "play a scenario folder (setup.toml + cmdlist) and print its event log",
            "ctmanager sim run tests/scenarios/fencing/hn-link-down")
    p.add_argument("folder")
    p = cmd(sims, "random", cmd_sim_random, "run randomized fault schedules and check the invariants",
            "ctmanager sim random --seed 17 --log")
    p.add_argument("--seed", type=integer_in(0, 2**63 - 1), default=1, help="first seed (default 1)")
    p.add_argument("--count", type=integer_in(1, 10**7), default=1, help="how many seeds from --seed (default 1)")
    p.add_argument("--minutes", type=seconds_in(0.01, 10**6), default=10.0, help="simulated minutes per schedule (default 10)")
    p.add_argument("--log", action="store_true", help="print the event log of each schedule")


def cmd_sim_run(args: argparse.Namespace) -> int:
    from ..sim.commands import SimError  # the simulator loads the daemons: only for sim
    from ..sim.scenario import play

    folder = Path(args.folder)
    if not (folder / "cmdlist").is_file():
        raise InputError(f"{folder}: not a scenario folder (needs setup.toml and cmdlist)")
    try:
        rack = play(folder)
    except SimError as exc:
        raise InputError(str(exc)) from None
    if want_json(args):
        emit_json({"log": rack.lines, "violations": rack.violations})
    else:
        print("\n".join(rack.lines))
        for v in rack.violations:
            print(f"VIOLATION {v}", file=sys.stderr)
    return 1 if rack.violations else 0


def cmd_sim_random(args: argparse.Namespace) -> int:
    from ..sim.commands import run
    from ..sim.rack import SimRack
    from ..sim.schedules import generate

    if args.count < 1 or not 0 < args.minutes <= 600:
        raise InputError("--count must be 1 or more and --minutes in (0, 600]")
    failed = 0
    results = []
    for seed in range(args.seed, args.seed + args.count):
        setup, schedule, end = generate(seed, args.minutes)
        rack = SimRack(setup)
        run(rack, schedule, end)
        wrong = rack.violations + rack.converged()
        failed += bool(wrong)
        results.append({"seed": seed, "ok": not wrong, "problems": wrong})
        if not want_json(args):
            if args.log:
                print("\n".join(rack.lines))
            print(f"seed {seed}: {'ok' if not wrong else 'FAILED: ' + '; '.join(wrong[:3])} "
                  f"({setup.hns} HNs, {setup.cts} CTs, {len(schedule)} commands)")
    if want_json(args):
        emit_json(results)
    return 1 if failed else 0
