"""`ctmanager lab fault ...`: rehearse failures on the lab rack.

    partition NODE...  each HN (or manager of a pair) loses its rack link (its
                       host-side veth goes down): no reports, no heartbeats, no SSH,
                       as if its switch port died; a manager keeps its store
    heal [NODE...]     links up, and "power on": an HN whose watchdog fired, or whose
                       agent was killed, gets its agent back; killed managers start
    kill-agent HN      kill -9 its ctagent and keep it down (as if it hung): the
                       watchdog then resets the HN `watchdog_timeout` later
    kill-manager [NAME]  kill -9 the leading manager (or NAME) and keep it down
                       until `heal`; --restart starts it again at once (as systemd)
    kill-backup NODE   kill -9 a storage node's ctbackup and the borg it runs (as
                       systemd stops a unit's cgroup); --restart starts it again
    backup-node-down   the DC's backup nodes stop (sshd and its borg serve sessions
                       killed): repositories unreachable until `heal`
    link-cut PEERING   a cloud peering's link drops everything at the provider's end
                       (the carrier stays up: only BFD, or BGP's hold time, notices)
    cloud-announce PEERING PREFIX / cloud-withdraw PEERING PREFIX
                       the provider of that peering's cloud announces (withdraws) a
                       prefix over every link: the border's filters decide
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..store import lease as leases
from ..store import open_store
from ..validate import is_digits
from . import backupnodes, borders, layout, managers
from .rack import spawn
from .shell import LabError, sh


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


def _split(lab: layout.Lab, names: list[str]) -> tuple[list[str], list[managers.LabManager]]:
    """`names` as HNs and managers (each must be one of them)."""
    mgrs = {m.name: m for m in managers.of(lab)}
    known = _state(lab).get("links", {})
    for n in names:
        if n not in known and n not in mgrs:
            raise InputError(f"no HN or manager {n!r} in the lab (HNs: {', '.join(sorted(known))}; managers: "
                             f"{', '.join(mgrs)})", where="NODE")
    return [n for n in names if n in known], [mgrs[n] for n in names if n in mgrs]


def partition(lab: layout.Lab, names: list[str], say: Callable[[str], None]) -> None:
    if not names:
        raise InputError("name the HN(s) or manager to cut off", where="NODE")
    hns, mgrs = _split(lab, names)
    links = _state(lab)["links"]
    for m in mgrs:
        if not m.link:
            raise InputError(f"{m.name} runs on the host and cannot be cut off; a lab with a manager pair can: "
                             "ctmanager lab up --managers 2", where="NODE")
    for n in hns:
        sh("ip", "link", "set", links[n], "down")
        say(f"{n}: rack link {links[n]} down")
    for m in mgrs:
        sh("ip", "link", "set", m.link, "down")
        say(f"{m.name}: rack link {m.link} down (its store stays in reach)")


def heal(lab: layout.Lab, names: list[str], say: Callable[[str], None]) -> None:
    state = _state(lab)
    hns, mgrs = _split(lab, names)
    for n in hns if names else _hns(lab, []):
        sh("ip", "link", "set", state["links"][n], "up")
        flag = lab.hn_dir(n) / "agent.down"
        if flag.exists():
            flag.unlink()  # hn_init starts the agent again within 0.2 s
            say(f"{n}: link up, agent powered on")
        else:
            say(f"{n}: link up")
    if not names:
        _backup_nodes_up(lab, say)
        borders.uncut(lab, say, sh)
    running = managers.pids(lab)
    for m in mgrs if names else managers.of(lab):
        if m.link:
            sh("ip", "link", "set", m.link, "up")
        if not alive(running.get(m.name)):
            say(f"{m.name}: started again (pid {managers.start(lab, m, spawn)})")
        elif m.link:
            say(f"{m.name}: link up")


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


def kill_manager(lab: layout.Lab, name: str | None, restart: bool, say: Callable[[str], None]) -> None:
    _, chosen = _split(lab, [name] if name else [])
    m = chosen[0] if chosen else leader(lab)
    pid = managers.pids(lab).get(m.name)
    if alive(pid):
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        say(f"{m.name} (pid {pid}) killed")
    else:
        say(f"{m.name} was not running")
    if restart:
        say(f"{m.name}: started again (pid {managers.start(lab, m, spawn)})")


def kill_backup(lab: layout.Lab, node: str, restart: bool, say: Callable[[str], None]) -> None:
    pid = _state(lab)["pids"].get(backupnodes.daemon_name(node))
    if pid is None:
        raise InputError(f"no ctbackup of {node!r} in the lab", where="NODE")
    _kill_group(pid)
    say(f"{node}: ctbackup (pid {pid}) and its borg killed")
    if restart:
        say(f"{node}: ctbackup started again (pid {backupnodes.start_daemon(lab, node, spawn)})")


def backup_node_down(lab: layout.Lab, say: Callable[[str], None]) -> None:
    for address in backupnodes.addresses(lab):
        pid = backupnodes.node_pid(lab, address)
        _kill_group(pid)
        folder = str(backupnodes.folder(lab, address))
        for proc in Path("/proc").iterdir():  # its borg serve sessions (sshd gives each its own session)
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in argv and any(folder.encode() in a for a in argv) and is_digits(proc.name):
                _kill(int(proc.name))
        say(f"backup node {address}: down")


def _backup_nodes_up(lab: layout.Lab, say: Callable[[str], None]) -> None:
    for address in backupnodes.addresses(lab):
        if not alive(backupnodes.node_pid(lab, address)):
            say(f"backup node {address}: up again (pid {backupnodes.start_node(lab, address, spawn)})")


def _kill_group(pid: int | None) -> None:
    if pid and alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            _kill(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def leader(lab: layout.Lab) -> managers.LabManager:
    """The manager that leads the lab's rack now (the store's lease), else the first."""
    mgrs = managers.of(lab)
    state = _state(lab)
    with open_store(state["store"]) as store:
        holder = leases.leaders(store).get(int(state["slot"]))
    return next((m for m in mgrs if holder and m.name == holder[0]), mgrs[0])


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status
