"""The lab's storage nodes: each one a network namespace at its rack address with
an sshd (pinned host key) in front of `ctstorage`, so a tenant move copies /data
over SSH between them as between real storage nodes. Their data is
<rack lab>/data/<storage node>/<CTID>, the folder every HN of the rack mounts
CTs' /data from.

Keys: a manager reaches every storage node of the DC with its own key (a move
reads the source rack's node too), and the storage nodes reach each other with
one storage key; one authorized_keys and one known_hosts for them all, kept by
the first rack's lab (`dc`), grow as racks come up. A DC lab routes between its racks' bridges on the
host (ip_forward, put back by `down`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..dc.model import Node
from ..dc.network import RackNet
from ..files import append, write_atomic
from . import layout, netns

Sh = Callable[..., Any]
Spawn = Callable[[list[str], Path], int]
FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def storage_key(dc: layout.Lab) -> Path:
    return dc.keys / "storage_ed25519"


def storage_known_hosts(dc: layout.Lab) -> Path:
    return dc.keys / "storage_known_hosts"


def storage_authorized_keys(dc: layout.Lab) -> Path:
    return dc.keys / "storage_authorized_keys"


def folder(lab: layout.Lab, node: Node | str) -> Path:
    return lab.root / "storage" / (node if isinstance(node, str) else node.hostname)


def veth(slot: int, position: int) -> str:
    return f"ctl{slot}s{position}"[:15]


def up(lab: layout.Lab, dc: layout.Lab, slot: int, node: Node, net: RackNet, sh: Sh, spawn: Spawn) -> str:
    """Start storage node `node` of rack `slot`; returns its known_hosts line."""
    if not storage_key(dc).exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ctmanager-lab-storage", "-f", str(storage_key(dc)))
    here, ns = folder(lab, node), lab.netns(node.hostname)
    here.mkdir(parents=True, exist_ok=True)
    (lab.root / "data" / node.hostname).mkdir(parents=True, exist_ok=True)
    netns.attach(lab, slot, net, ns, veth(slot, node.position), node.ip, sh)
    host_key = here / "ssh_host_ed25519_key"
    if not host_key.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", node.hostname, "-f", str(host_key))
    # One file for every storage node of the DC (sshd reads it at each login): every
    # rack's manager key, added as its rack comes up, and the nodes' own key.
    authorized = storage_authorized_keys(dc)
    have = authorized.read_text() if authorized.exists() else Path(f"{storage_key(dc)}.pub").read_text()
    mine = Path(f"{lab.ssh_key}.pub").read_text()
    write_atomic(authorized, (have + ("" if mine in have else mine)).encode(), 0o600)
    write_atomic(here / "ctstorage.toml", (ctstorage_toml(node, lab.root / "data" / node.hostname, dc,
                                                        f"/run/ctm-lab-ssh/{node.hostname}")).encode(), 0o644)
    write_atomic(here / "sshd_config", (layout.sshd_text(
        f"sshd of {node.hostname}, in its network namespace", node.ip, host_key, here / "sshd.pid", authorized,
        f"CTSTORAGE_CONFIG={here / 'ctstorage.toml'} CTBACKUP_CONFIG={here / 'ctbackup.toml'}")).encode(), 0o644)
    Path("/run/sshd").mkdir(exist_ok=True)
    pid = spawn(["ip", "netns", "exec", ns, "/usr/sbin/sshd", "-D", "-e", "-f", str(here / "sshd_config")],
                lab.logs / f"{node.hostname}.log")
    lab.set_pid(node.hostname, pid)
    pub = Path(f"{host_key}.pub").read_text().split()
    line = f"{node.ip} {pub[0]} {pub[1]}\n"
    append(storage_known_hosts(dc), line.encode())
    return line


def ctstorage_toml(node: Node, data: Path, dc: layout.Lab, control_dir: str = "") -> str:
    """`control_dir`: its own, where nodes share /run (the lab's); short: a socket path."""
    control = f'control_dir = "{control_dir}"\n' if control_dir else ""
    return f"""# Written by `ctmanager lab`: ctstorage of {node.hostname}.
data = "{data}"

[ssh]                       # how it reads a peer storage node's /data (a tenant move pulls)
user = "root"
key_file = "{storage_key(dc)}"
known_hosts = "{storage_known_hosts(dc)}"
connect_timeout = 5
{control}"""


def route_between_racks(dc: layout.Lab) -> None:
    """Let the host forward between the racks' bridges (a move crosses them)."""
    state = dc.read_state()
    if "ip_forward" not in state:
        dc.write_state({**state, "ip_forward": FORWARD.read_text().strip()})
    FORWARD.write_text("1\n")


def restore_routing(dc: layout.Lab) -> None:
    was = dc.read_state().get("ip_forward")
    if was in ("0", "1"):
        FORWARD.write_text(f"{was}\n")
