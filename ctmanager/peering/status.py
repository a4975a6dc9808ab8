"""What BIRD itself says of the peerings: `birdc -s SOCKET show protocols all` (the
command) and its parser (tested with captured output). Per BGP protocol: its state
and since when, the last error, the routes it imported and exported, and how many
updates the import filter refused."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from ..errors import CtmError
from .bird import ident

_HEAD = re.compile(r"^(?P<name>\S+)\s+(?P<proto>\S+)\s+(?P<table>\S+)\s+(?P<state>\S+)\s+(?P<since>\S+)\s*(?P<info>.*)$")
_ROUTES = re.compile(r"Routes:\s+(\d+) imported, (\d+) exported")
_UPDATES = re.compile(r"Import updates:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)")


@dataclass(frozen=True)
class Session:
    protocol: str
    state: str          # BIRD's: up | start | down …
    bgp_state: str      # Established | Active | Connect | Idle …
    since: str          # BIRD's clock, as it prints it
    info: str           # e.g. "Error: BFD session down"
    imported: int = 0
    exported: int = 0
    received: int = 0   # import updates the peer sent
    filtered: int = 0   # … that the import filter refused

    @property
    def up(self) -> bool:
        return self.bgp_state == "Established"


def argv(socket: str) -> list[str]:
    return ["birdc", "-s", socket, "show", "protocols", "all"]


def parse(text: str) -> dict[str, Session]:
    """BGP protocols by name. A block starts with a header line in column 0."""
    out: dict[str, Session] = {}
    blocks: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("BIRD ") or line.startswith("Name ") or not line.strip():
            continue
        if not line[0].isspace():
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
    for block in blocks:
        m = _HEAD.match(block[0])
        if not m or m["proto"] != "BGP":
            continue
        body = "\n".join(block[1:])
        bgp = re.search(r"BGP state:\s+(\S+)", body)
        routes, updates = _ROUTES.search(body), _UPDATES.search(body)
        info = m["info"].strip()
        state = bgp.group(1) if bgp else info.split()[0] if info else ""
        if info.startswith(state):
            info = info[len(state):].strip()  # what is left: the last error, if any
        out[m["name"]] = Session(
            m["name"], m["state"], state, m["since"], info,
            int(routes.group(1)) if routes else 0, int(routes.group(2)) if routes else 0,
            int(updates.group(1)) if updates else 0, int(updates.group(3)) if updates else 0)
    return out


def read(socket: str, timeout: float = 10) -> dict[str, Session]:
    try:
        p = subprocess.run(argv(socket), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise CtmError("birdc is not installed here (Debian: bird2)") from None
    except subprocess.TimeoutExpired:
        raise CtmError(f"birdc -s {socket}: no answer in {timeout:g} s") from None
    if p.returncode != 0 or "Unable to connect" in p.stdout:
        why = (p.stderr or p.stdout).strip().splitlines()
        raise CtmError(f"birdc -s {socket}: {why[-1] if why else f'exit {p.returncode}'} (is BIRD running there?)")
    return parse(p.stdout)


def of(sessions: dict[str, Session], peering: str) -> Session | None:
    return sessions.get(ident(peering))
