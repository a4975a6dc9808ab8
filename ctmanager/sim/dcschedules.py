"""Randomized schedules of a DC of two racks with tenant moves, reproducible
from one seed: what sim/schedules.py does to one rack (cuts, one-way loss,
partitions, kills, restarts, store outages, hung runtimes, power, weather,
clock skew), to either rack, mixed with ops commands (tenant moves to either
rack, aborts, `ct set --admst`, drains) and with what a busy manager does (a
stall between deciding and recording). The last stretch is calm: every fault
healed, every HN undrained; by its end every move has ended, every ADMST UP CT
runs on exactly one HN of its rack and no intent is left pending. The
invariants of sim/dc.py and sim/rack.py are checked throughout.
"""

from __future__ import annotations

import random

from ..store import moves
from .dc import SLOTS, SimDc, run
from .rack import Setup
from .schedules import SeedOutcome, _fault
from .world import Weather

CALM = 240.0  # s of the 10 minutes: a move that must roll back after the flip needs stop + start timeouts and a copy back
TENANTS = 2


def generate(seed: int, minutes: float = 10.0) -> tuple[Setup, list[tuple[float, str]], float]:
    rng = random.Random(seed)
    hns = rng.randint(3, 4)
    names = {slot: [f"hn-{slot}-{i}" for i in range(1, hns + 1)] for slot in SLOTS}
    weather = Weather(loss=rng.choice((0.0, 0.0, 0.05, 0.2)), duplicate=rng.choice((0.0, 0.05)),
                      delay=0.002, jitter=rng.choice((0.0, 0.05, 0.5)))
    managers = 2 if rng.random() < 0.75 else 1
    mgrs = {slot: [f"mgr-{slot}-{chr(ord('a') + i)}" for i in range(managers)] for slot in SLOTS}
    setup = Setup(hns=hns, cts=rng.randint(1, 3), seed=seed, weather=weather,
                  reboot_after=rng.choice((30.0, 60.0)), fence_command=rng.random() < 0.25,
                  skew=rng.choice((0.0, 0.05, 0.3)), managers=managers)
    end = minutes * 60
    t, out = 5.0, []
    while True:
        t += rng.expovariate(1 / 12)  # a command every 12 s on average: about one in three is ops
        if t >= end - CALM:
            break
        slot = rng.choice(SLOTS)
        if rng.random() < 0.35:
            out.append((round(t, 2), _ops(rng, names, mgrs)))
        else:
            fault = _fault(rng, names[slot], mgrs[slot])
            if fault in ("kill manager", "restart manager"):  # "the leader": of which rack, say
                fault = f"{fault} {rng.choice(mgrs[slot])}"
            out.append((round(t, 2), fault))
    calm = end - CALM
    out += [(calm, "heal"), (calm, "weather clear"), (calm, "store up")]
    for slot in SLOTS:
        for n in names[slot]:
            out += [(calm, f"unhang runtime {n}"), (calm, f"power on {n}"), (calm, f"start agent {n}"),
                    (calm, f"hn undrain {n}")]
        out += [(calm, f"start manager {m}") for m in mgrs[slot]]
    return setup, out, end


def _ops(rng: random.Random, names: dict[int, list[str]], mgrs: dict[int, list[str]]) -> str:
    tenant = f"t{rng.randint(1, TENANTS)}"
    kind = rng.choices(["move", "abort", "admst", "drain", "undrain", "stall"], weights=[5, 2, 2, 1, 2, 3])[0]
    if kind == "move":
        return f"tenant move {tenant} --to {rng.choice(SLOTS)}" + (" --no-precopy" if rng.random() < 0.5 else "")
    if kind == "abort":
        return f"tenant abort {tenant}"
    if kind == "admst":
        return f"ct set {tenant} --admst {rng.choice(('up', 'up', 'down'))}"
    if kind in ("drain", "undrain"):
        return f"hn {kind} {rng.choice(names[rng.choice(SLOTS)])}"
    return f"stall {rng.choice(mgrs[rng.choice(SLOTS)])} {rng.choice((0.3, 1.0, 1.6))}"


def run_seed(seed: int, minutes: float = 10.0) -> SeedOutcome:
    setup, schedule, end = generate(seed, minutes)
    dc = SimDc(setup, TENANTS)
    # Calm: ops leave ADMST as they set it; a tenant set down stays down (converged() asks only for UP ones).
    run(dc, schedule, end)
    actions = sum(len(m.issued) for r in dc.racks.values() for m in r.managers.values())
    ended = tuple(m.phase + (" (copied back)" if any("copied back" in line for line in m.log) else "")
                  for m in moves.listing(dc.store, limit=10_000))
    return SeedOutcome(seed, tuple(dc.violations), tuple(dc.converged()), tuple(schedule), dc.net.delivered,
                       actions, ended)
