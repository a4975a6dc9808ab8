"""The lab rack on real machines (the Vagrant rack, or hosts of your own): the same
pieces as `lab up` — prototype and software trees, per-CT /data, the HN's agent
beside the lab's watchdog, BIND on the DC's resolver addresses, the manager daemon,
the inventory — but each set up in place on its own machine by
`ctmanager lab machine ROLE NAME`.

Every machine has <root> (/srv/ctmanager) with `shared/` mounted from one place
(the Vagrant host's vagrant/.rack): the store, the keys, every CT's /data, the
BIND key, the machines' published host keys, the managers' configs and each rack's
inventory. A DC of several racks shares it too: every machine routes the DC's
other racks through its rack's gateway. Provisioning order: the storage nodes
(the first makes the keys; each seeds its rack's /data and runs ctstorage behind
its sshd, for tenant moves), then dns and the HNs, then the managers (they pin
the host keys and write the inventory the test suite reads).

The agent and the manager run the deploy folders' units as shipped
(agents/ctagent.service, manager/ctmanager.service: see lab/deploy.py), with a
drop-in for what the lab changes; the lab's own daemons (named, the HNs' stand-in
watchdog) are systemd services ctm-NAME. All are restarted when they die and log to
<root>/logs. HNs are reached from the manager over two networks: the rack
network (the manager's SSH, as in production) and a console network (the
machines' first NIC: Vagrant's, or a real rack's out-of-band one), which the test
suite uses to look at an HN and to rehearse faults, and which a cut rack link
leaves alone.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

from .. import validate as v
from ..dc.model import DcTemplate, Node
from ..dc.network import rack_context
from ..errors import InputError
from ..files import write_atomic
from ..storagenode.cli import DEFAULT_CONFIG as DEFAULT_STORAGE_CONFIG
from ..store import Store, pg, queries
from ..store.db import is_url
from . import deploy, dnsserver, layout, metricsct, storagenodes
from .rack import REPORT_PORT, pin_mac, prototype, seed_data, software
from .shell import LabError, sh

ROOT = "/srv/ctmanager"
ROLES = ("storage", "dns", "hn", "manager")
UNIT_PREFIX = "ctm-"
# Debian starts these on install where systemd runs; ctmanager runs its own
# (named on the resolver addresses, a lab CT's collectd...) or none of them.
DISTRO_SERVICES = ("named", "nginx", "postfix", "danted", "collectd", "carbon-cache", "lxc-net")
MANAGER_USER = "ctmanager"          # manager/ctmanager.service's User=
MANAGER_ETC = Path("/etc/ctmanager")  # its config, keys and pgpass (the unit's paths)
TSIG_KEY = MANAGER_ETC / "tsig.key"   # the DNS key's path in the store: the same on every machine that publishes
CONSOLE_IF = "eth0"    # the machines' first NIC: the console network
RACK_IF = "eth1"       # the rack network


def setup(role: str, name: str, store: Store, lab: layout.Lab, slot: int, manager_ip: str, dns_ip: str,
          say: Callable[[str], None]) -> None:
    if role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)} (got {role!r})")
    for ip, what in [*((m, "--manager") for m in manager_ip.split(",")), (dns_ip, "--dns")]:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise InputError(f"{what} must be an IP address, or for an HN several separated by commas "
                             f"(got {ip!r})") from None
    if role == "manager" and "," in manager_ip:
        raise InputError("--manager: a manager machine listens on one address, its own")
    dc = queries.dc_template(store)
    _common(lab)
    _routes(dc, slot, role, dns_ip)
    if role == "storage":
        _storage(lab, store, slot, _node(store, slot, name, "storage"), say)
    elif role == "dns":
        dnsserver.up(lab, store, dc, RACK_IF, _service_spawner("named"), say, key_at=TSIG_KEY)
    elif role == "hn":
        _hn(lab, dc, store, slot, _node(store, slot, name, "compute"), manager_ip, dns_ip, say)
    else:
        _manager(lab, store, slot, manager_ip, name, say)


def _routes(dc: DcTemplate, slot: int, role: str, dns_ip: str) -> None:
    """The other racks of the DC through this rack's gateway (the DC's routers: the
    Vagrant host), and the DC's resolvers through the dns machine where it is on
    this rack's network (from another rack they are behind the gateway too). An HN
    sets them again once its rack NIC has joined the bridge (which drops them)."""
    net = rack_context(dc, slot).net
    sh("ip", "route", "replace", str(dc.network.supernet), "via", net.gateway)
    if role != "dns" and ipaddress.ip_address(dns_ip) in ipaddress.ip_network(net.network):
        for resolver in dc.resolvers:  # the DC's resolvers live on the dns machine
            sh("ip", "route", "replace", f"{resolver}/32", "via", dns_ip)


def _common(lab: layout.Lab) -> None:
    shared = lab.root / "shared"
    if not shared.is_dir():
        raise LabError(f"{shared} is missing: every machine needs the rack's shared folder mounted there")
    for d in ("keys", "data", "bind", "hosts"):
        (shared / d).mkdir(exist_ok=True)
        link = lab.root / d
        if not link.is_symlink():
            link.symlink_to(shared / d)
    lab.logs.mkdir(parents=True, exist_ok=True)
    for unit in DISTRO_SERVICES:
        subprocess.run(["systemctl", "disable", "--now", f"{unit}.service"], capture_output=True, timeout=60)


def _node(store: Store, slot: int, name: str, role: str) -> Node:
    nodes = {n.hostname: n for n in queries.nodes(store, rack=slot) if n.role == role}
    what = "HN" if role == "compute" else "storage node"
    if name not in nodes:
        raise InputError(f"no {what} {name!r} in rack-{slot} ({what}s: {', '.join(sorted(nodes)) or 'none'})",
                         where="NAME")
    return nodes[name]


def _storage(lab: layout.Lab, store: Store, slot: int, node: Node, say: Callable[[str], None]) -> None:
    """The storage node holds the rack's /data (<data>/<its name>/<CTID>; the first
    one also makes the DC's keys) and runs ctstorage behind its sshd: a tenant move
    pulls /data from another rack's storage node with the storage key."""
    lab.keys.chmod(0o700)
    if not lab.rack_key.exists():
        write_atomic(lab.rack_key, (secrets.token_hex(32) + "\n").encode(), 0o600)
    for key, comment in ((lab.ssh_key, "ctmanager-manager"), (storagenodes.storage_key(lab), "ctmanager-storage"),
                         (lab.console_key, "ctmanager-console")):
        if not key.exists():
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key))
    dc, cts = queries.dc_template(store), queries.cts(store, rack=slot)
    data = lab.root / "data" / node.hostname
    data.mkdir(parents=True, exist_ok=True)
    for ct in cts:
        seed_data(lab, dc, ct)
    _authorize(_pub(lab.ssh_key), _pub(storagenodes.storage_key(lab)), _pub(lab.console_key))
    config = Path(DEFAULT_STORAGE_CONFIG)
    config.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(config, (storagenodes.ctstorage_toml(node, data, lab)).encode(), 0o644)
    _publish(lab, node.hostname, node.ip)
    # every storage node of the DC published so far (each one's provisioning rewrites it)
    storage = [n.hostname for n in queries.nodes(store) if n.role == "storage"]
    write_atomic(storagenodes.storage_known_hosts(lab), _known(lab, storage, "known").encode(), 0o644)
    sh("systemctl", "enable", "--now", "ssh.service")
    say(f"{node.hostname}: /data of {len(cts)} CTs in {data}, ctstorage ({config}) behind sshd on {node.ip}")


def _pub(key: Path) -> str:
    return Path(f"{key}.pub").read_text().strip() + "\n"


def _authorize(*lines: str) -> None:
    """root's authorized_keys: exactly these lines (the console's key everywhere; the
    manager's, gated on an HN; a storage node's peers')."""
    ssh_dir = Path("/root/.ssh")
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    write_atomic(ssh_dir / "authorized_keys", "".join(lines).encode(), 0o600)


def _publish(lab: layout.Lab, name: str, rack_ip: str | None) -> str:
    """Publish this machine's host key for others to pin: at its rack address
    (`rack_ip`; the manager's SSH, a storage peer's) and on the console network
    (the tests'). Returns its console address."""
    key = Path("/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
    console = _address(CONSOLE_IF)
    if rack_ip:
        write_atomic(lab.root / "hosts" / f"{name}.known", f"{rack_ip} {key[0]} {key[1]}\n".encode(), 0o644)
    write_atomic(lab.root / "hosts" / f"{name}.console", f"{console} {key[0]} {key[1]}\n".encode(), 0o644)
    return console


def _known(lab: layout.Lab, names: list[str], kind: str) -> str:
    """known_hosts lines of those of `names` that published one (`kind`: known | console)."""
    files = [lab.root / "hosts" / f"{n}.{kind}" for n in names]
    return "".join(f.read_text() for f in files if f.exists())


def missing_controllers(proc_cgroup: str, proc_mounts: str) -> list[str]:
    """The v1 controllers (as /proc/self/cgroup names them, e.g. "cpu,cpuacct") this
    process is in but that have no cgroup mount (by mount point name)."""
    wanted = [line.split(":", 2)[1] for line in proc_cgroup.splitlines() if line.count(":") >= 2]
    mounted = {Path(f[1]).name for f in (line.split() for line in proc_mounts.splitlines())
               if len(f) > 2 and f[2] == "cgroup"}
    return [c for c in wanted if c and not c.startswith("name=") and c not in mounted]


def mount_missing_cgroups() -> list[str]:
    """Mount every v1 controller that `missing_controllers` finds (a container's
    /sys/fs/cgroup may lack some; LXC then fails with "Failed to initialize
    cgroups"). Returns what it mounted."""
    base = Path("/sys/fs/cgroup")
    missing = missing_controllers(Path("/proc/self/cgroup").read_text(), Path("/proc/self/mounts").read_text())
    if missing:
        sh("mount", "-o", "remount,rw", str(base))
    for c in missing:
        point = base / c
        if point.is_symlink():  # systemd links cpu -> cpu,cpuacct, expecting them joined
            point.unlink()
        point.mkdir(exist_ok=True)
        sh("mount", "-t", "cgroup", "-o", c, "cgroup", str(point))
    return missing


def _hn(lab: layout.Lab, dc: DcTemplate, store: Store, slot: int, node: Node, manager_ip: str, dns_ip: str,
        say: Callable[[str], None]) -> None:
    fixed = mount_missing_cgroups()
    if fixed:
        say(f"{node.hostname}: mounted cgroup controllers {', '.join(fixed)}")
    prototype(lab)
    software(lab, dc.environments)
    net = rack_context(dc, slot).net
    _bridge(net.bridge, f"{node.ip}/{net.prefixlen}")
    _routes(dc, slot, "hn", dns_ip)
    hdir = lab.hn_dir(node.hostname)
    for d in ("state", "lxc", "ctconf"):
        (hdir / d).mkdir(parents=True, exist_ok=True)
    rack_hns = [n for n in queries.nodes(store, rack=slot) if n.role == "compute"]
    # From here on as agents/README.md says: the config where the unit and the gate read it,
    # the tools in /usr/bin, the sshd snippet, the managers' key through ctgate, the unit.
    conf = Path(layout.MACHINE_AGENT_CONFIG)
    conf.parent.mkdir(exist_ok=True)
    if conf.is_symlink():
        conf.unlink()
    write_atomic(conf, layout.agent_toml(lab, dc, slot, node, manager_ip.split(","), REPORT_PORT, rack_hns,
                                         metricsct.relay(queries.cts(store, rack=slot))).encode(), 0o644)
    deploy.link_tools("ctagent", "ctgate")
    deploy.sshd_snippet()
    _authorize(deploy.managers_authorized_keys([_pub(lab.ssh_key)]), _pub(lab.console_key))
    console = _publish(lab, node.hostname, node.ip)
    log = lab.logs / f"{node.hostname}.log"
    # the lab's stand-in for /dev/watchdog (a FIFO the agent pets), first: the agent opens it
    _service("watchdog", [layout.python(), "-m", "ctmanager.lab.hn_init", "--watchdog", str(conf)], log)
    deploy.start(deploy.install_unit("agents", "ctagent.service", deploy.log_to(log)))
    say(f"{node.hostname}: {node.ip} on {net.bridge} ({RACK_IF}), console {console}, "
        f"ctagent.service from agents/ (the manager's key gated), the lab watchdog beside it")


def _manager(lab: layout.Lab, store: Store, slot: int, manager_ip: str, name: str,
             say: Callable[[str], None]) -> None:
    """`name`: this machine's, the manager's name in its rack (a pair: one per machine).
    What the tests read goes to the shared folder, so a suite on one rack's manager
    machine reaches the other racks too: the config (shared/managers/NAME.toml) and
    the rack's inventory (shared/inventory/rack-N.toml, also <root>/inventory.toml)."""
    v.label(name, "NAME")
    everyone = queries.nodes(store)
    nodes = [n for n in everyone if n.role == "compute" and n.rack == slot]
    storage = [n for n in everyone if n.role == "storage" and n.rack == slot]
    if not is_url(str(store.path)):
        raise LabError("a manager machine runs manager/ctmanager.service as its own user: the store must be "
                       "PostgreSQL (postgresql://USER:PW@HOST/DB), not a file")
    missing = [n.hostname for n in nodes + storage if not (lab.root / "hosts" / f"{n.hostname}.known").exists()]
    if missing:
        raise LabError(f"set the HNs and storage nodes up before the manager: no host key from {', '.join(missing)}")
    _authorize(_pub(lab.console_key))  # the tests' console (a manager killed, its log read)
    _publish(lab, name, None)
    shared = lab.root / "shared"
    for d in ("managers", "inventory"):
        (shared / d).mkdir(exist_ok=True)
    config = shared / "managers" / f"{name}.toml"
    # the DC's HNs (this rack's pinned, all racks' fine), and every console the tests use
    write_atomic(lab.known_hosts, _known(lab, [n.hostname for n in everyone if n.role == "compute"],
                                         "known").encode(), 0o644)
    console_known = lab.keys / "console_known_hosts"
    consoles_of = [n.hostname for n in everyone] + [p.stem for p in sorted((shared / "managers").glob("*.toml"))]
    write_atomic(console_known, _known(lab, sorted(set(consoles_of + [name])), "console").encode(), 0o644)
    # the config names the manager's own copies (/etc/ctmanager); the tests read it here too
    config_text = layout.manager_toml(lab, slot, manager_ip, REPORT_PORT, metricsct.relay(queries.cts(store, rack=slot)),
                                      name, secrets=MANAGER_ETC)
    write_atomic(config, config_text.encode(), 0o644)
    mine = sorted((p.stem, p) for p in (shared / "managers").glob("*.toml")
                  if f'rack = "rack-{slot}"' in p.read_text())  # by name, as the tests take the first
    consoles = {n: (lab.root / "hosts" / f"{n}.console").read_text().split()[0]
                for n in [*(x.hostname for x in nodes + storage), *(m for m, _ in mine)]}
    # A PostgreSQL URL holds the store's password: it goes to files only root reads
    # (the inventory) or only the manager does (its pgpass), never onto a command line (ps).
    # manager_config and manager_log name one manager: the rack's first, on every rewrite
    inventory = layout.machines_inventory_toml(lab, store.path, slot, mine[0][1], nodes, storage, mine, consoles,
                                               console_known)
    rack_inventory = shared / "inventory" / f"rack-{slot}.toml"
    write_atomic(rack_inventory, inventory.encode(), 0o600)
    if lab.inventory.exists() or lab.inventory.is_symlink():
        lab.inventory.unlink()
    lab.inventory.symlink_to(rack_inventory)
    _install_manager(lab, str(store.path), config_text)
    say(f"manager: ctmanager.service from manager/ as user {MANAGER_USER}, listening on {manager_ip}:{REPORT_PORT}; "
        f"inventory {rack_inventory}")


def _install_manager(lab: layout.Lab, store_url: str, config_text: str) -> None:
    """As manager/README.md says: the service's user, its config and its own copies of
    the keys in /etc/ctmanager, the store's password in its pgpass, the unit (the lab's
    drop-in: the store's address and a log file the tests read)."""
    user = deploy.system_user(MANAGER_USER, f"/var/lib/{MANAGER_USER}")
    MANAGER_ETC.mkdir(mode=0o755, exist_ok=True)
    for src, name, mode in ((lab.rack_key, "rack.key", 0o600), (lab.ssh_key, "id_ed25519", 0o600),
                            (lab.known_hosts, "known_hosts", 0o644),
                            (storagenodes.storage_known_hosts(lab), "storage_known_hosts", 0o644),
                            (lab.root / "bind" / "tsig.key", "tsig.key", 0o600)):  # the store names this path
        if src.exists():
            deploy.give(src, MANAGER_ETC / name, user, mode)
    deploy.give_text(config_text, MANAGER_ETC / "manager.toml", user, 0o644)
    bare, line = pg.split_password(store_url)
    deploy.give_text(line, MANAGER_ETC / "store.pgpass", user, 0o600)
    deploy.link_tools("ctmanager")
    drop_in = deploy.log_to(lab.logs / "manager.log") + f'Environment="CTMANAGER_STORE={deploy.unit_escape(bare)}"\n'
    deploy.start(deploy.install_unit("manager", "ctmanager.service", drop_in))


def _bridge(bridge: str, address: str) -> None:
    """The HN's rack NIC goes into the DC's bridge, which takes over its address."""
    if sh("ip", "link", "show", bridge, check=False).returncode != 0:
        sh("ip", "link", "add", bridge, "type", "bridge")
    sh("ip", "link", "set", bridge, "up")
    sh("ip", "addr", "flush", "dev", RACK_IF)
    sh("ip", "link", "set", RACK_IF, "master", bridge, "up")
    pin_mac(bridge, RACK_IF)
    sh("ip", "addr", "replace", address, "dev", bridge)


def _address(interface: str) -> str:
    out = sh("ip", "-4", "-o", "addr", "show", "dev", interface).stdout
    m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
    if not m:
        raise LabError(f"{interface} has no IPv4 address")
    return m.group(1)


def _service(name: str, argv: list[str], log: Path) -> int:
    """Run `argv` as the systemd service ctm-NAME (enabled, restarted when it dies);
    returns its PID. KillMode=process: stopping an HN's service leaves its CTs."""
    unit = f"{UNIT_PREFIX}{name}.service"
    log.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(Path("/etc/systemd/system", unit), (f"""# Written by `ctmanager lab machine`.
[Unit]
Description=ctmanager lab machine: {name}
After=network-online.target

[Service]
ExecStart={shlex.join(argv)}
Environment=PYTHONUNBUFFERED=1
Restart=always
RestartSec=1
KillMode=process
StandardOutput=append:{log}
StandardError=append:{log}

[Install]
WantedBy=multi-user.target
""").encode(), 0o644)
    sh("systemctl", "daemon-reload")
    deploy.start(unit)
    pid = sh("systemctl", "show", "-p", "MainPID", "--value", unit).stdout.strip()
    return int(pid) if v.is_digits(pid) else 0


def _service_spawner(name: str) -> Callable[[list[str], Path], int]:
    return lambda argv, log: _service(name, argv, log)


def check_root() -> None:
    if os.geteuid() != 0:
        raise LabError("setting a machine up needs root")
