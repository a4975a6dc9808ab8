"""Where the lab keeps things, and the config files it writes (manager, agent,
sshd, inventory). All values come from the store or from names we made, and
paths are checked, so nothing here can inject into a config line."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import validate as v
from ..dc.model import Node, Paths
from ..files import write_atomic
from ..store.db import Locator

DEFAULT_DIR = "/var/lib/ctmanager-lab"
ENV_VAR = "CTMANAGER_LAB_DIR"


NETNS_PREFIX = "ctlab-"


def is_lab_link(name: str) -> bool:
    """The lab's bridge (ctlab<slot>) and host veth ends (ctl<slot>h<pos>, a
    namespaced manager's ctl<slot>m<i>, a storage node's ctl<slot>s<pos>, a border
    router's uplink ctlb<i>)."""
    return bool(re.fullmatch(r"ctlab\d+|ctl\d+[hms]\d+|ctlb\d+", name))


class Lab:
    def __init__(self, root: str | None = None) -> None:
        self.root = Path(v.path(root or os.environ.get(ENV_VAR) or DEFAULT_DIR, "--dir"))
        self.proto = self.root / "proto"
        self.keys = self.root / "keys"
        self.logs = self.root / "logs"
        self.rack_key = self.keys / "rack.key"
        self.ssh_key = self.keys / "id_ed25519"
        self.console_key = self.keys / "console_key"   # machines: the tests' shell on each (not gated)
        self.authorized_keys = self.keys / "authorized_keys"
        self.known_hosts = self.keys / "known_hosts"
        self.manager_config = self.root / "manager.toml"
        self.inventory = self.root / "inventory.toml"
        self.state_file = self.root / "lab.json"

    def paths(self) -> Paths:
        r = str(self.root)
        return Paths(prototype=f"{r}/proto", software=f"{r}/sw", data=f"{r}/data", config=f"{r}/ctconf",
                     ve_root=f"{r}/vz/root", ve_private=f"{r}/vz/private", export_root=f"{r}/export")

    def hn_dir(self, hn: str) -> Path:
        return self.root / "hn" / hn

    @staticmethod
    def netns(hn: str) -> str:
        return f"{NETNS_PREFIX}{hn}"

    @staticmethod
    def bridge(slot: int) -> str:
        return f"ctlab{slot}"

    @staticmethod
    def veth(slot: int, position: int) -> str:
        return f"ctl{slot}h{position}"[:15]

    def read_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (OSError, ValueError):
            return {}

    def write_state(self, state: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.state_file, json.dumps(state, indent=1).encode(), 0o644, sync=False)

    def set_pid(self, name: str, pid: int) -> None:
        state = self.read_state()
        state.setdefault("pids", {})[name] = pid
        self.write_state(state)

    def mounts_under(self) -> list[str]:
        root = str(self.root).rstrip("/") + "/"
        with open("/proc/self/mounts") as f:
            points = [line.split()[1].replace("\\040", " ") for line in f]
        return [p for p in points if p.startswith(root)]


AGENT_PORT = 7071
MACHINE_AGENT_CONFIG = "/etc/ctagent/ctagent.toml"  # a machine's (agents/ctagent.service reads it)


def ctagent_path() -> str:
    """The ctagent of this installation (the venv's, next to this Python)."""
    here = Path(sys.executable).parent / "ctagent"
    return str(here) if here.exists() else (shutil.which("ctagent") or "ctagent")


def ctgate_path() -> str:
    """The ctgate of this installation (beside ctagent): the manager key's forced command."""
    return str(Path(ctagent_path()).with_name("ctgate"))


def manager_key_line(public_key: str) -> str:
    """An HN's authorized_keys line for the manager's key: ctagent through ctgate, nothing else
    (its config comes from CTAGENT_CONFIG, which the HN's sshd sets)."""
    command = f"{ctgate_path()} --agent {ctagent_path()}"
    return f'restrict,command="{command}" {public_key.strip()}\n'


def ctstorage_path() -> str:
    """The ctstorage of this installation (beside ctagent)."""
    return str(Path(ctagent_path()).with_name("ctstorage"))


def ctbackup_path() -> str:
    """The ctbackup of this installation (beside ctagent)."""
    return str(Path(ctagent_path()).with_name("ctbackup"))


def _metrics(graphite: str) -> str:
    """The [metrics] section: the daemon's own figures to the rack's carbon relay."""
    return f'\n[metrics]\ngraphite = "{graphite}"   # the metrics CT\'s carbon relay\n' if graphite else ""


def manager_toml(lab: Lab, slot: int, address: str, port: int, graphite: str = "", name: str = "",
                 storage_known: Path | None = None, secrets: Path | None = None) -> str:
    """`name`: the manager's (unique in its rack); `address`: where it hears reports;
    `secrets`: the folder of the manager's own copies of the keys and known_hosts
    (a manager machine's /etc/ctmanager), else the lab's."""
    v.label(name or f"mgr-{slot}-a", "manager name")
    rack_key, ssh_key, known = ((secrets / "rack.key", secrets / "id_ed25519", secrets / "known_hosts") if secrets
                                else (lab.rack_key, lab.ssh_key, lab.known_hosts))
    storage_known = secrets / "storage_known_hosts" if secrets else storage_known
    return f"""# Written by `ctmanager lab up`: a manager of the lab rack.
rack = "rack-{slot}"
name = "{name or f'mgr-{slot}-a'}"
listen = "{address}:{port}"
key_file = "{rack_key}"
agent_command = ["{ctagent_path()}"]   # its config comes from CTAGENT_CONFIG, set by each HN's sshd
agent_port = {AGENT_PORT}                 # heartbeats go to every HN's agent here

[ssh]
user = "root"
key_file = "{ssh_key}"
known_hosts = "{known}"
connect_timeout = 5.0
action_timeout = 30.0
concurrency = 8

[timers]
stale_after = 3.0
reject_memory = 300.0
full_plan_every = 1.0
{_metrics(graphite)}

[fencing]
fence_after = 5.0
watchdog_timeout = 10.0
dead_after = 16.0

[moves]               # tenant moves into this rack: ctstorage on the storage nodes, over [ssh]
storage_command = ["{ctstorage_path()}"]
known_hosts = "{storage_known or known}"   # every storage node of the DC lab
[backups]             # ctbackup on the storage nodes: `ctmanager backup`, the leader's alarms
command = ["{ctbackup_path()}"]
poll_every = 10.0
"""


def agent_toml(lab: Lab, dc: Any, slot: int, node: Node, managers: list[str], port: int, rack_hns: list[Node],
               graphite: str = "") -> str:
    """`rack_hns`: every compute node of the rack (the voters, as the manager counts
    them), whether or not the lab runs it; `managers`: every manager's address (the
    agent reports to each: a standby keeps its view warm)."""
    to = [f"{v.ipv4(m, 'manager address')}:{port}" for m in managers] + \
        [f"{n.ip}:{AGENT_PORT}" for n in rack_hns if n.hostname != node.hostname]
    p = lab.paths()
    sku = dc.skus[node.sku]
    # paths.config is local to each real HN; shared here, one HN's destroy would
    # delete the resolv.conf another HN is about to bind-mount for the same CT.
    ctconf = lab.hn_dir(node.hostname) / "ctconf"
    state = lab.hn_dir(node.hostname) / "state"
    return f"""# Written by `ctmanager lab up`: the agent of {node.hostname}.
rack = {slot}
hn = "{node.hostname}"
key_file = "{lab.rack_key}"
runtime = "lxc"
report_to = [{", ".join(f'"{a}"' for a in to)}]
listen = "{node.ip}:{AGENT_PORT}"
report_interval = 1.0
state_dir = "{state}"

[capacity]            # the SKU's, as on the real server
memory = {sku.memory}
disk = {sku.disk}

[lxc]
lxcpath = "{lab.hn_dir(node.hostname) / 'lxc'}"

[paths]
prototype = "{p.prototype}"
software = "{p.software}"
data = "{p.data}"
config = "{ctconf}"

[fencing]
voters = [{", ".join(f'"{n.hostname}"' for n in rack_hns)}]
watchdog = "{lab.hn_dir(node.hostname) / 'watchdog'}"   # a FIFO read by the lab's watchdog (hn_init)
fence_after = 5.0
watchdog_timeout = 10.0
dead_after = 16.0
{_metrics(graphite)}"""


def sshd_config(lab: Lab, node: Node, host_key: Path) -> str:
    hdir = lab.hn_dir(node.hostname)
    return sshd_text(f"sshd of {node.hostname}, in its network namespace", node.ip, host_key, hdir / "sshd.pid",
                     lab.authorized_keys, f"CTAGENT_CONFIG={hdir / 'ctagent.toml'}")


def sshd_text(what: str, address: str, host_key: Path, pid_file: Path, authorized: Path, env: str = "") -> str:
    """One sshd of the lab (an HN's, a storage node's, a backup node's): keys only, root by key."""
    return f"""# Written by `ctmanager lab up`: {what}.
ListenAddress {address}
Port 22
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
SetEnv {" ".join(("SHLVL=1", env)).strip()}
"""  # SHLVL=1: Debian's bash sources root's ~/.bashrc for a command sshd runs at shell level 1 only. The lab's nodes
#      share this machine's /root, whose .bashrc is a developer's (pyenv init: ~80 ms a command); a node's is stock


def python() -> str:
    """This installation's Python (the venv's)."""
    return sys.executable


def _strings(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"  # JSON strings are TOML basic strings


def _inventory_hn(n: Node, console: list[str], hdir: Path, log: Path, agent_config: Path | None = None) -> str:
    return f"""
[[hns]]
name = "{n.hostname}"
address = "{n.ip}"
console = {_strings(console)}   # a shell on the HN (tests look and rehearse faults through it)
ctagent = "{ctagent_path()}"
lxcpath = "{hdir / 'lxc'}"
agent_config = "{agent_config or hdir / 'ctagent.toml'}"
log = "{log}"
"""


def _inventory_storage(n: Node, data: Path, console: list[str], log: Path | None = None) -> str:
    return f"""
[[storage]]
name = "{n.hostname}"
address = "{n.ip}"
data = "{data}"   # the CTs' /data folders, <data>/<CTID>
console = {_strings(console)}   # a shell where its ctstorage runs
{f'log = "{log}"' if log else ""}
"""


def _inventory_head(lab: Lab, store: Locator, slot: int, config: Path | None = None) -> str:
    return f"""# The integration tests reach the rack through this file only, so the same
# suite runs against the lab, the Vagrant rack, or real hardware.
store = {json.dumps(str(store))}
manager_config = "{config or lab.manager_config}"
rack = "rack-{slot}"
ssh_key = "{lab.ssh_key}"
known_hosts = "{lab.known_hosts}"
data = "{lab.paths().data}"
manager_log = "{lab.logs / 'manager.log'}"
"""


def inventory_toml(lab: Lab, store: Locator, slot: int, nodes: list[Node], gateway: str,
                   managers: Sequence[tuple[str, Path, Path]] = (), storage: Sequence[Node] = ()) -> str:
    """`managers`: (name, log, config) of each of the rack's managers; `storage`: its storage nodes."""
    hns = "".join(_inventory_hn(n, ["ip", "netns", "exec", lab.netns(n.hostname)], lab.hn_dir(n.hostname),
                                lab.logs / f"{n.hostname}.log") for n in nodes)
    # a storage node's console joins its sshd's namespaces (mount too: what ctstorage sees)
    pids = lab.read_state().get("pids", {})
    hns += "".join(_inventory_storage(n, lab.root / "data" / n.hostname,
                                      ["nsenter", "-t", str(int(pids[n.hostname])), "-m", "-n"],
                                      lab.logs / f"{n.hostname}.log") for n in storage)
    mgrs = "".join(f'\n[[managers]]\nname = "{v.label(name, "manager")}"\nlog = "{log}"\nconfig = "{config}"\n'
                   for name, log, config in managers)
    return f"""# Written by `ctmanager lab up`.
{_inventory_head(lab, store, slot)}gateway = "{gateway}"
lab_dir = "{lab.root}"   # lab only: `ctmanager lab fault --dir` rehearses failures here
{hns}{mgrs}"""


def machines_inventory_toml(lab: Lab, store: Locator, slot: int, config: Path, nodes: list[Node],
                            storage: list[Node], managers: Sequence[tuple[str, Path]], consoles: dict[str, str],
                            console_known: Path) -> str:
    """`consoles`: each machine's address on the console network (HNs, storage
    nodes, managers); `managers`: (name, config) of each of the rack's managers."""
    ssh = ["ssh", "-i", str(lab.console_key), "-o", f"UserKnownHostsFile={console_known}", "-o",
           "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
           # one connection per machine, reused: a console command then takes milliseconds
           "-o", "ControlMaster=auto", "-o", "ControlPath=/run/ctm-console-%C", "-o", "ControlPersist=300"]
    hns = "".join(_inventory_hn(n, [*ssh, f"root@{consoles[n.hostname]}"], lab.hn_dir(n.hostname),
                                lab.logs / f"{n.hostname}.log", Path(MACHINE_AGENT_CONFIG)) for n in nodes)
    hns += "".join(_inventory_storage(n, lab.root / "data" / n.hostname, [*ssh, f"root@{consoles[n.hostname]}"])
                   for n in storage)
    mgrs = "".join(f"""
[[managers]]
name = "{v.label(name, 'manager')}"
config = "{path}"
console = {_strings([*ssh, f"root@{consoles[name]}"])}
log = "{lab.logs / 'manager.log'}"   # on its machine
""" for name, path in managers)
    return f"""# Written by `ctmanager lab machine manager`.
{_inventory_head(lab, store, slot, config)}
[faults]   # how to rehearse failures here: shell commands on the HN's console ({{hn_dir}}: its folder)
partition = "ip link set eth1 down"
heal = "ip link set eth1 up; systemctl start ctagent.service"
# SIGKILL, then a stop: systemd must not start it again (a hung agent stays hung)
kill_agent = "systemctl kill --kill-whom=main -s KILL ctagent.service; systemctl stop ctagent.service"
kill_manager = "systemctl kill -s KILL ctmanager.service"   # on the leading manager; systemd starts it again
{hns}{mgrs}"""
