"""`ctmanager lab fault ...`: rehearse failures on the lab rack.

    partition HN...   each HN loses its rack link (its host-side veth goes down):
                      no reports, no heartbeats, no SSH, as if its switch port died
    heal [HN...]      links up, and "power on": an HN whose watchdog fired, or whose
                      agent was killed, gets its agent back; a killed manager restarts
    kill-agent HN     kill -9 its ctagent and keep it down (as if it hung): the
                      watchdog then resets the HN `watchdog_timeout` later
    kill-manager      kill -9 the manager, then start a new one (like systemd would),
                      unless --no-restart
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError
from . import layout
from .rack import LabError, sh, start_manager


def _state(lab: layout.Lab) -> dict[str, Any]:
    state = lab.read_state()
    if not state.get("pids"):
        raise InputError(f"no lab in {lab.root} (start one: ctmanager lab up)")
    return state


def _hns(lab: layout.Lab, names: list[str]) -> list[str]:
    known = _state(lab).get("links", {})
    for n in names:
        if n not in known:
            raise InputError(f"no HN {n!r} in the lab (HNs: {', '.join(sorted(known))})", where="HN")
    return names or sorted(known)


def partition(lab: layout.Lab, names: list[str], say: Callable[[str], None]) -> None:
    if not names:
        raise InputError("name the HN(s) to cut off", where="HN")
    links = _state(lab)["links"]
    for n in _hns(lab, names):
        sh("ip", "link", "set", links[n], "down")
        say(f"{n}: rack link {links[n]} down")


def heal(lab: layout.Lab, names: list[str], say: Callable[[str], None]) -> None:
    state = _state(lab)
    for n in _hns(lab, names):
        sh("ip", "link", "set", state["links"][n], "up")
        flag = lab.hn_dir(n) / "agent.down"
        if flag.exists():
            flag.unlink()  # hn_init starts the agent again within 0.2 s
            say(f"{n}: link up, agent powered on")
        else:
            say(f"{n}: link up")
    if not names and not alive(state["pids"].get("manager")):
        say(f"manager: started again (pid {start_manager(lab)})")


def kill_agent(lab: layout.Lab, name: str, say: Callable[[str], None]) -> None:
    _hns(lab, [name])
    hdir = lab.hn_dir(name)
    (hdir / "agent.down").touch()  # hn_init must not restart it: a hung agent stays hung
    try:
        pid = int((hdir / "ctagent.pid").read_text())
    except (OSError, ValueError):
        raise LabError(f"{name}: no ctagent.pid; is the lab up?") from None
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    say(f"{name}: ctagent (pid {pid}) killed; its watchdog resets the HN when it is not petted")


def kill_manager(lab: layout.Lab, restart: bool, say: Callable[[str], None]) -> None:
    pid = _state(lab)["pids"].get("manager")
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
        say(f"manager (pid {pid}) killed")
    if restart:
        say(f"manager: started again (pid {start_manager(lab)})")


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status
