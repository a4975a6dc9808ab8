"""The fault commands of a simulated schedule, one per line:

    network NODE off|on          cut / restore both directions between NODE and everyone
    network NODE out-off|in-off  cut one direction only (its datagrams lost / it hears nothing)
    link A B off|on              cut / restore the one direction A -> B
    partition A,B | C,manager    only nodes on the same side hear each other (the store, unless
                                 named on a side, stays in reach of every side)
    heal                         every link back
    kill agent HN                kill -9 (its watchdog resets the node later)
    start agent HN               the agent runs again (the node must be on)
    hang runtime HN | unhang runtime HN
    power off HN | power on HN   (power on boots it: no CT runs, a new boot)
    kill manager [NAME]          kill -9: NAME, or the one leading now (else the first alive)
    restart manager [NAME]       kill -9 and start again: NAME, or the leader (else every manager)
    start manager NAME           start a killed manager
    store down | store up        the store's server stops / runs again
    weather loss=0.2 duplicate=0.1 jitter=0.5 | weather clear

NODE, A, B: an HN, a manager ("manager", or "mgr-a", "mgr-b" ... in a rack of
several) or "store".

Bad commands raise SimError naming the line.
"""

from __future__ import annotations

from .manager import SimManager
from .rack import SimRack
from .world import STORE, Weather


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


def apply(rack: SimRack, cmd: str, everyone: set[str] | None = None, quiet: bool = False) -> None:
    """`everyone`: the nodes a `network NODE off` cuts NODE from (default: the rack's);
    `quiet`: not logged (a DC applies `heal` to each of its racks, logged once)."""
    words = cmd.split()
    everyone = set(rack.nodes) if everyone is None else everyone
    rack.links_changing()
    if not quiet:
        rack.log("cmd", cmd)

    def hn(name: str) -> str:
        if name not in rack.agents:
            raise SimError(f"{cmd!r}: no HN {name!r} (HNs: {', '.join(sorted(rack.agents))})")
        return name

    def node(name: str) -> str:
        if name not in everyone:
            raise SimError(f"{cmd!r}: no node {name!r} (nodes: {', '.join(sorted(everyone))})")
        return name

    def manager(name: str | None, default: str) -> list[SimManager]:
        if name is not None:
            if name not in rack.managers:
                raise SimError(f"{cmd!r}: no manager {name!r} (managers: {', '.join(rack.managers)})")
            return [rack.managers[name]]
        lead = rack.leader()
        if lead is not None:
            return [lead]
        alive = [m for m in rack.managers.values() if m.alive]
        return alive[:1] if default == "first" else list(rack.managers.values())

    match words:
        case ["network", name, "off"]:
            rack.net.isolate(node(name), everyone)
        case ["network", name, "out-off"]:
            rack.net.isolate(node(name), everyone, inbound=False)
        case ["network", name, "in-off"]:
            rack.net.isolate(node(name), everyone, outbound=False)
        case ["network", name, "on"]:
            rack.net.heal(node(name))
        case ["link", a, b, "off" | "on" as state]:
            node(a), node(b)
            if state == "off":
                rack.net.cut.add((a, b))
            else:
                rack.net.cut.discard((a, b))
        case ["partition", *_]:
            sides = [{n.strip() for n in side.split(",") if n.strip()} for side in " ".join(words[1:]).split("|")]
            for side in sides:
                for n in side:
                    node(n)
            named = set().union(*sides)
            rack.net.partition(sides, everyone if STORE in named else everyone - {STORE})
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
        case ["kill", "manager", *name] if len(name) <= 1:
            for m in manager(name[0] if name else None, "first"):
                m.kill()
        case ["restart", "manager", *name] if len(name) <= 1:
            for m in manager(name[0] if name else None, "all"):
                m.kill()
                m.start()
        case ["start", "manager", name]:
            m = manager(name, "first")[0]
            if not m.alive:
                m.start()
        case ["store", "down" | "up" as state]:
            rack.store_up = state == "up"
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
