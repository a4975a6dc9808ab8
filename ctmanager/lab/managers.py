"""The lab's managers. One (the default) runs on the host and listens on the
rack's gateway address, as before. With `lab up --managers N` (a pair, or
more), each runs in a network namespace of its own with a veth on the rack
bridge and an address of its own (the gateway + 10 + i: 10.101.0.11, .12 ...),
so `lab fault partition mgr-101-b` can cut one off the rack network: no
reports, heartbeats or SSH. Its store stays in reach (a file, or PostgreSQL's
unix socket), which is the case "cut off from the HNs but not the store".

Names are mgr-<slot>-a, mgr-<slot>-b ...; the state file lists them with their
config, log, address and link, and each one's pid is kept under its name.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..dc.network import RackNet
from ..errors import InputError
from . import layout, netns

Spawn = Callable[[list[str], Path], int]
Sh = Callable[..., subprocess.CompletedProcess[str]]
MAX = 4


@dataclass(frozen=True)
class LabManager:
    name: str
    ip: str
    config: Path
    log: Path
    netns: str  # "" on the host
    link: str  # its host-side veth ("" on the host)

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "ip": self.ip, "config": str(self.config), "log": str(self.log),
                "netns": self.netns, "link": self.link}


def plan(lab: layout.Lab, slot: int, net: RackNet, count: int) -> list[LabManager]:
    """The managers of a lab rack: one on the host at the gateway, or `count` in namespaces."""
    out = []
    gateway = ipaddress.ip_address(net.gateway)
    for i in range(count):
        letter = chr(ord("a") + i)
        name = f"mgr-{slot}-{letter}"
        config = lab.manager_config if i == 0 else lab.root / f"manager-{letter}.toml"
        log = lab.logs / ("manager.log" if i == 0 else f"manager-{letter}.log")
        if count == 1:
            out.append(LabManager(name, net.gateway, config, log, "", ""))
        else:
            out.append(LabManager(name, str(gateway + 10 + i), config, log, lab.netns(name), f"ctl{slot}m{i}"[:15]))
    return out


def check_store(locator: str, count: int) -> None:
    """A namespaced manager has a loopback of its own: a store on this host's
    127.0.0.1 is not there (a file, a unix socket or another host's address is)."""
    if count < 2 or not locator.startswith(("postgresql://", "postgres://")):
        return
    host = urllib.parse.urlsplit(locator).hostname or ""
    if host in ("localhost", "127.0.0.1", "::1") or host.startswith("127."):
        raise InputError("--managers 2: each manager runs in a network namespace of its own, where this host's "
                         "loopback is not; give the store as a unix socket (postgresql:///DB?host=/run/postgresql) "
                         "or at a rack-reachable address")


def of(lab: layout.Lab) -> list[LabManager]:
    """The managers the lab's state file lists (older labs: the one on the host)."""
    state = lab.read_state()
    rows = state.get("managers")
    if not rows:
        return [LabManager("manager", "", lab.manager_config, lab.logs / "manager.log", "", "")]
    return [LabManager(r["name"], r["ip"], Path(r["config"]), Path(r["log"]), r["netns"], r["link"]) for r in rows]


def network(lab: layout.Lab, slot: int, net: RackNet, m: LabManager, sh: Sh) -> None:
    """A namespaced manager's namespace and link (nothing for the host's)."""
    if m.netns:
        netns.attach(lab, slot, net, m.netns, m.link, m.ip, sh)


def start(lab: layout.Lab, m: LabManager, spawn: Spawn) -> int:
    store = lab.read_state()["store"]
    argv = [sys.executable, "-m", "ctmanager", "--store", store, "run", "--config", str(m.config)]
    pid = spawn((["ip", "netns", "exec", m.netns] if m.netns else []) + argv, m.log)
    lab.set_pid(m.name, pid)
    return pid


def pids(lab: layout.Lab) -> dict[str, int]:
    state: dict[str, Any] = lab.read_state().get("pids", {})
    return {m.name: int(state[m.name]) for m in of(lab) if state.get(m.name)}
