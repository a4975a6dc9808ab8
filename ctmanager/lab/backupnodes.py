"""The lab's backup nodes and each storage node's backup daemon.

A backup node is the `backup` address of a slot range in the DC template (one
per realm in the example): in the lab, an sshd on the host at that address (as
the lab's DNS server is), in front of borg. Its authorized_keys give each storage
node its own key, held by a forced command to appending to its own repository,
<backup>/repos/<realm>/<storage node> (`borg serve --append-only
--restrict-to-repository`), and one prune key, for the backup side, that may
rewrite the realm's repositories (`--restrict-to-path`, no --append-only).

A repository per (realm, storage node), not one per realm: a borg repository has
one writer at a time (an exclusive lock), so 40 storage nodes sharing one would
queue behind each other and miss the RPO; deduplication across storage nodes is
what that costs. A realm's repositories all live on its own backup node: a
tenant's data and its backups never leave the realm (tenant moves keep the data
in it; the backup node is chosen by the storage node's slot).

Each storage node runs `ctbackup run` in its namespace (its /data is
<rack lab>/data/<node>); the prune side's config for it is
<backup>/prune/<node>.toml, with the prune key: never on the storage node.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..dc.model import DcTemplate, Node
from ..files import append, write_atomic
from . import layout, storagenodes

Sh = Callable[..., Any]
Spawn = Callable[[list[str], Path], int]
RPO = 60  # s: the lab's (15 x better than the seed's 15 minutes)


def folder(dc: layout.Lab, address: str) -> Path:
    return dc.root / "backup" / address


def repository(dc: layout.Lab, address: str, realm: str, node: str) -> Path:
    return folder(dc, address) / "repos" / (realm or "default") / node


def known_hosts(dc: layout.Lab) -> Path:
    return dc.keys / "backup_known_hosts"


def prune_key(dc: layout.Lab) -> Path:
    return dc.keys / "backup_prune_ed25519"


def node_key(dc: layout.Lab, node: str) -> Path:
    return dc.keys / f"backup-{node}_ed25519"


def passphrase(dc: layout.Lab, node: str) -> Path:
    return dc.keys / f"backup-{node}.pass"


def config_path(lab: layout.Lab, node: str) -> Path:
    return storagenodes.folder(lab, node) / "ctbackup.toml"


def _pid_name(address: str) -> str:
    return f"backup-{address}"


def ensure_node(dc: layout.Lab, address: str, bridge: str, sh: Sh, spawn: Spawn) -> None:
    """The backup node at `address` runs (started on the first call; its address on `bridge`)."""
    if _pid_name(address) in dc.read_state().get("pids", {}):
        return
    here = folder(dc, address)
    (here / "repos").mkdir(parents=True, exist_ok=True)
    sh("ip", "addr", "replace", f"{address}/32", "dev", bridge)
    host_key = here / "ssh_host_ed25519_key"
    if not host_key.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"backup-{address}", "-f", str(host_key))
    if not prune_key(dc).exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ctmanager-lab-backup-prune",
           "-f", str(prune_key(dc)))
    authorized = here / "authorized_keys"
    if not authorized.exists():
        pub = Path(f"{prune_key(dc)}.pub").read_text().strip()
        write_atomic(authorized, f'restrict,command="borg serve --restrict-to-path {here / "repos"}" {pub}\n'
                     .encode(), 0o600)
    write_atomic(here / "sshd_config", (layout.sshd_text(f"the backup node {address}", address, host_key,
                                                       here / "sshd.pid", authorized)).encode(), 0o644)
    Path("/run/sshd").mkdir(exist_ok=True)
    start_node(dc, address, spawn)
    kind, body = Path(f"{host_key}.pub").read_text().split()[:2]
    append(known_hosts(dc), f"{address} {kind} {body}\n".encode())


def start_node(dc: layout.Lab, address: str, spawn: Spawn) -> int:
    here = folder(dc, address)
    pid = spawn(["/usr/sbin/sshd", "-D", "-e", "-f", str(here / "sshd_config")], dc.logs / f"backup-{address}.log")
    dc.set_pid(_pid_name(address), pid)
    return pid


def node_pid(dc: layout.Lab, address: str) -> int | None:
    pid = dc.read_state().get("pids", {}).get(_pid_name(address))
    return int(pid) if pid else None


def attach(lab: layout.Lab, dc: layout.Lab, template: DcTemplate, node: Node, sh: Sh, spawn: Spawn) -> str:
    """Give storage node `node` its backup key, repository and config, and start its
    daemon; returns the backup node's address ("" when its slot range names none)."""
    address = template.backup_of(node.rack)
    if not address:
        return ""
    realm = template.realm_of(node.rack)
    ensure_node(dc, address, lab.bridge(node.rack), sh, spawn)
    key, repo = node_key(dc, node.hostname), repository(dc, address, realm, node.hostname)
    repo.parent.mkdir(parents=True, exist_ok=True)
    if not key.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"backup-{node.hostname}", "-f", str(key))
    pub = Path(f"{key}.pub").read_text().strip()
    authorized = folder(dc, address) / "authorized_keys"
    line = f'restrict,command="borg serve --append-only --restrict-to-repository {repo}" {pub}\n'
    have = authorized.read_text()
    if line not in have:
        write_atomic(authorized, (have + line).encode(), 0o600)
    if not passphrase(dc, node.hostname).exists():
        write_atomic(passphrase(dc, node.hostname), (secrets.token_urlsafe(32) + "\n").encode(), 0o600)
    here = storagenodes.folder(lab, node)
    data = lab.root / "data" / node.hostname
    write_atomic(config_path(lab, node.hostname), (ctbackup_toml(node.hostname, data, here / "ctbackup",
                                                    f"ssh://root@{address}{repo}", key, known_hosts(dc),
                                                    passphrase(dc, node.hostname))).encode(), 0o644)
    prune = folder(dc, address) / "prune"
    prune.mkdir(exist_ok=True)
    write_atomic(prune / f"{node.hostname}.toml", (ctbackup_toml(node.hostname, data, prune / f"state-{node.hostname}", f"ssh://root@{address}{repo}",
                      prune_key(dc), known_hosts(dc), passphrase(dc, node.hostname))).encode(), 0o644)
    start_daemon(lab, node.hostname, spawn)
    return address


def start_daemon(lab: layout.Lab, node: str, spawn: Spawn) -> int:
    pid = spawn(["ip", "netns", "exec", lab.netns(node), layout.ctbackup_path(), "--config",
                 str(config_path(lab, node)), "run"], lab.logs / f"{node}-ctbackup.log")
    lab.set_pid(daemon_name(node), pid)
    return pid


def addresses(dc: layout.Lab) -> list[str]:
    """The backup nodes the lab started."""
    return sorted(n[len("backup-"):] for n in dc.read_state().get("pids", {}) if n.startswith("backup-"))


def daemon_name(node: str) -> str:
    return f"ctbackup-{node}"


def ctbackup_toml(node: str, data: Path, state: Path, location: str, key: Path, known: Path,
                  passphrase_file: Path, rpo: int = RPO) -> str:
    return f"""# Written by `ctmanager lab`: ctbackup of {node}.
data = "{data}"
node = "{node}"
state_dir = "{state}"
rpo = {rpo}

[repository]
location = "{location}"
passphrase_file = "{passphrase_file}"
key_file = "{key}"
known_hosts = "{known}"
"""
