"""Randomized fault schedules, reproducible from one seed.

A schedule is a rack (3-5 HNs, 4-10 CTs, random report weather; most often a
pair of managers, else one) and a list of timed faults over `minutes` simulated
minutes: links cut and one-way loss between any of the managers, the store and
the HNs, partitions, kills and restarts of agents and managers, store outages,
hung runtimes, power. The last stretch is calm: every link healed, every node
on, every manager and the store running; by its end every ADMST UP CT must run
on exactly one HN and no intent may be left pending. The invariants of
ctmanager/sim/rack.py are checked throughout.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..fencing.quorum import MANAGER
from .commands import run
from .rack import Setup, SimRack
from .world import STORE, Weather

CALM = 60.0  # s at the end with no fault: long enough to converge after nodes boot


@dataclass(frozen=True)
class SeedOutcome:
    seed: int
    violations: tuple[str, ...]
    not_converged: tuple[str, ...]
    commands: tuple[tuple[float, str], ...]
    delivered: int
    actions: int
    moves: tuple[str, ...] = ()  # how each tenant move ended (DC schedules): done, rolled-back, ...

    @property
    def ok(self) -> bool:
        return not self.violations and not self.not_converged

    def describe(self) -> str:
        lines = [f"seed {self.seed}: {len(self.violations)} violation(s), not converged: "
                 f"{'; '.join(self.not_converged) or 'no'}"]
        lines += [f"  violation at {v}" for v in self.violations[:5]]
        lines += [f"  @{t:.1f} {c}" for t, c in self.commands]
        return "\n".join(lines)


def generate(seed: int, minutes: float = 10.0) -> tuple[Setup, list[tuple[float, str]], float]:
    rng = random.Random(seed)
    hns = rng.randint(3, 5)
    names = [f"hn-101-{i}" for i in range(1, hns + 1)]
    weather = Weather(loss=rng.choice((0.0, 0.0, 0.05, 0.2)), duplicate=rng.choice((0.0, 0.05)),
                      delay=0.002, jitter=rng.choice((0.0, 0.05, 0.5)))
    managers = 2 if rng.random() < 0.75 else 1
    mgrs = [MANAGER] if managers == 1 else ["mgr-a", "mgr-b"]
    setup = Setup(hns=hns, cts=rng.randint(4, 10), seed=seed, weather=weather,
                  reboot_after=rng.choice((30.0, 60.0, None)), fence_command=rng.random() < 0.25,
                  skew=rng.choice((0.0, 0.05, 0.3)), managers=managers)
    end = minutes * 60
    t, out = 5.0, []
    while True:
        t += rng.expovariate(1 / 25)  # a fault every 25 s on average
        if t >= end - CALM:
            break
        out.append((round(t, 2), _fault(rng, names, mgrs)))
    calm = end - CALM
    out += [(calm, "heal"), (calm, "weather clear"), (calm, "store up")]
    for n in names:
        out += [(calm, f"unhang runtime {n}"), (calm, f"power on {n}"), (calm, f"start agent {n}")]
    out += [(calm, f"start manager {m}") for m in mgrs]
    return setup, out, end


def _fault(rng: random.Random, names: list[str], mgrs: list[str]) -> str:
    hn = rng.choice(names)
    kind = rng.choices(
        ["off", "on", "oneway", "partition", "heal", "kill", "start", "hang", "unhang", "manager", "weather", "power",
         "mgr-net", "store"],
        weights=[4, 4, 2, 3, 3, 2, 2, 1, 1, 2, 2, 1, 3, 2])[0]
    if kind == "off":
        return f"network {hn} off"
    if kind == "on":
        return f"network {hn} on"
    if kind == "oneway":
        return f"network {hn} {rng.choice(('in-off', 'out-off'))}"
    if kind == "mgr-net":  # a manager (or the store) cut off, or a one-way loss
        return f"network {rng.choice([*mgrs, STORE])} {rng.choice(('off', 'on', 'on', 'in-off', 'out-off'))}"
    if kind == "store":
        return f"store {rng.choice(('down', 'up', 'up'))}"
    if kind == "partition":
        nodes = names + mgrs + ([STORE] if rng.random() < 0.5 else [])
        rng.shuffle(nodes)
        cut = rng.randint(1, len(nodes) - 1)
        return f"partition {','.join(nodes[:cut])} | {','.join(nodes[cut:])}"
    if kind == "heal":
        return "heal"
    if kind == "kill":
        return f"kill agent {hn}"
    if kind == "start":
        return f"start agent {hn}"
    if kind == "hang":
        return f"hang runtime {hn}"
    if kind == "unhang":
        return f"unhang runtime {hn}"
    if kind == "manager":
        m = rng.choice(mgrs)
        return rng.choice((f"kill manager {m}", f"restart manager {m}", f"start manager {m}", "kill manager",
                           "restart manager"))
    if kind == "power":
        return f"power {rng.choice(('off', 'on'))} {hn}"
    return (f"weather loss={rng.choice((0.0, 0.1, 0.3))} duplicate={rng.choice((0.0, 0.1))} "
            f"jitter={rng.choice((0.0, 0.2, 1.0))}")


def run_seed(seed: int, minutes: float = 10.0) -> SeedOutcome:
    setup, schedule, end = generate(seed, minutes)
    rack = SimRack(setup)
    run(rack, schedule, end)
    return SeedOutcome(seed, tuple(rack.violations), tuple(rack.converged()), tuple(schedule), rack.net.delivered,
                       sum(len(m.issued) for m in rack.managers.values()))
