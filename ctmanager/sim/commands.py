"""The fault commands of a simulated schedule, one per line:

    network HN off|on            cut / restore both directions between HN and everyone
    network HN out-off|in-off    cut one direction only (its datagrams lost / it hears nothing)
    link A B off|on              cut / restore the one direction A -> B (A, B: HNs or manager)
    partition A,B | C,manager    only nodes on the same side hear each other
    heal                         every link back
    kill agent HN                kill -9 (its watchdog resets the node later)
    start agent HN               the agent runs again (the node must be on)
    hang runtime HN | unhang runtime HN
    power off HN | power on HN   (power on boots it: no CT runs, a new boot)
    kill manager | restart manager
    weather loss=0.2 duplicate=0.1 jitter=0.5 | weather clear

Bad commands raise SimError naming the line.
"""

from __future__ import annotations

from ..fencing.quorum import MANAGER
from .rack import SimRack
from .world import Weather


class SimError(ValueError):
    pass


def parse_cmdlist(text: str, source: str = "cmdlist") -> list[tuple[float, str]]:
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        at, _, cmd = line.partition(" ")
        try:
            t = float(at)
        except ValueError:
            raise SimError(f"{source}:{n}: a line starts with a time in seconds (got {at!r})") from None
        if t < 0 or not cmd.strip():
            raise SimError(f"{source}:{n}: expected 'SECONDS COMMAND'")
        out.append((t, cmd.strip()))
    return out


def apply(rack: SimRack, cmd: str) -> None:
    words = cmd.split()
    everyone = set(rack.voters)
    rack.links_changing()
    rack.log("cmd", cmd)

    def hn(name: str) -> str:
        if name not in rack.agents:
            raise SimError(f"{cmd!r}: no HN {name!r} (HNs: {', '.join(sorted(rack.agents))})")
        return name

    match words:
        case ["network", name, "off"]:
            rack.net.isolate(hn(name), everyone)
        case ["network", name, "out-off"]:
            rack.net.isolate(hn(name), everyone, inbound=False)
        case ["network", name, "in-off"]:
            rack.net.isolate(hn(name), everyone, outbound=False)
        case ["network", name, "on"]:
            rack.net.heal(hn(name))
        case ["link", a, b, "off" | "on" as state]:
            for n in (a, b):
                if n != MANAGER:
                    hn(n)
            if state == "off":
                rack.net.cut.add((a, b))
            else:
                rack.net.cut.discard((a, b))
        case ["partition", *_]:
            sides = [{n.strip() for n in side.split(",") if n.strip()} for side in " ".join(words[1:]).split("|")]
            for side in sides:
                for n in side:
                    if n != MANAGER:
                        hn(n)
            rack.net.partition(sides, everyone)
        case ["heal"]:
            rack.net.heal()
        case ["kill", "agent", name]:
            rack.agents[hn(name)].kill()
        case ["start", "agent", name]:
            rack.agents[hn(name)].start_agent()
        case ["hang", "runtime", name]:
            rack.agents[hn(name)].hung_runtime = True
        case ["unhang", "runtime", name]:
            rack.agents[hn(name)].hung_runtime = False
        case ["power", "off", name]:
            agent = rack.agents[hn(name)]
            if agent.powered:
                agent.reset("powered off")
                agent.boots += 1  # no automatic reboot
        case ["power", "on", name]:
            agent = rack.agents[hn(name)]
            if not agent.powered:
                agent.boot()
        case ["kill", "manager"]:
            rack.manager.kill()
        case ["restart", "manager"]:
            rack.manager.kill()
            rack.manager.start()
        case ["weather", "clear"]:
            rack.net.weather = Weather()
        case ["weather", *pairs]:
            w = Weather(**rack.net.weather.__dict__)
            for pair in pairs:
                key, _, value = pair.partition("=")
                if key not in ("loss", "duplicate", "jitter", "delay"):
                    raise SimError(f"{cmd!r}: weather takes loss, duplicate, jitter, delay")
                try:
                    setattr(w, key, float(value))
                except ValueError:
                    raise SimError(f"{cmd!r}: {key} needs a number") from None
            rack.net.weather = w
        case _:
            raise SimError(f"unknown command {cmd!r}")


def run(rack: SimRack, schedule: list[tuple[float, str]], end: float) -> None:
    for t, cmd in sorted(schedule, key=lambda x: x[0]):
        rack.run_until(t)
        apply(rack, cmd)
    rack.run_until(end)
