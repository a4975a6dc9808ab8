"""The lab: real racks on this machine (one, or a DC of several on one store:
the first rack's lab folder holds the others' under racks/rack-<slot>, and its
`down` takes them all down).

    bridge ctlab<slot> (the rack network, the gateway address on the host)
      └─ per HN: a network namespace with eth0 in a bridge named like the DC's
         (br0) holding the HN's address; sshd (pinned host key) and ctagent in it
      └─ LXC CTs, their veths in the HN's bridge, their own IPs on the rack network
    storage: <dir>/proto (RO prototype, host /usr bound read-only into it),
             <dir>/sw/<env> (RO), <dir>/data/<storage>/<ctid> (RW)
    the manager daemon on the host, reports to <gateway>:7070; agents hear each
    other and the manager's heartbeats on <HN>:7071; each HN's hn_init runs a
    watchdog on <dir>/hn/<HN>/watchdog that kills the HN's CTs when not petted

`up` writes <dir>/inventory.toml (store, manager config, HN addresses, keys),
which the integration tests read, so they can run against other racks too.
`down` removes everything `up` made, and is safe to run twice.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..dc.model import Ct, DcTemplate, Node
from ..dc.network import RackNet, rack_context
from ..errors import InputError
from ..files import write_atomic
from ..monitoring.provision import write_service
from ..render import ctfiles
from ..store import Store, queries
from ..validate import is_digits
from . import backupnodes, borders, dnsserver, layout, managers, metricsct, storagenodes
from .shell import LabError, sh

REPORT_PORT = 7070
TOOLS = ("lxc-start", "sshd", "svscan", "ip", "ssh-keygen", "mount", "named", "dig", "tsig-keygen", "collectd")


def pin_mac(bridge: str, port: str | None = None, ns: str | None = None) -> None:
    """Fix a bridge's MAC (to `port`'s, or to the one it has). Left alone, a bridge
    takes the lowest MAC of its ports and changes it as CT veths come and go; a
    peer's ARP entry for the old one then goes nowhere until it expires, the HN
    drops off the rack for ~20 s and fences (seen on the Vagrant rack)."""
    out = sh("ip", "-o", "link", "show", "dev", port or bridge, ns=ns).stdout
    m = re.search(r"link/ether ([0-9a-f:]{17})", out)
    if m is None:
        raise LabError(f"{port or bridge} has no MAC address: {out.strip()[:200]}")
    sh("ip", "link", "set", bridge, "address", m.group(1), ns=ns)


def check_host() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, bridges, LXC)")
    missing = [t for t in TOOLS if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]
    if missing:
        raise LabError(f"missing tools: {', '.join(missing)}; run: bash scripts/setup.sh")


def up(store: Store, lab: layout.Lab, slot: int, hn_count: int, progress: Callable[[str], None], *,
       dns: bool = True, fresh: bool = True, manager_count: int = 1, dc_lab: layout.Lab | None = None) -> None:
    """Bring rack `slot` up in `lab`. `fresh`: take a lab already there down
    first; `dns`: start the DC's DNS server (the first rack of a DC lab does,
    the others use it: its addresses are the host's, reachable from every rack);
    `manager_count`: one manager on the host, or that many in namespaces (lab/managers.py);
    `dc_lab`: the first rack's lab of a DC lab (it keeps the storage nodes' shared keys)."""
    check_host()
    managers.check_store(str(store.path), manager_count)  # before anything is made
    from ..paths import data_dir

    data_dir("collectd")  # a broken install fails here, before any bridge or namespace exists
    if fresh and lab.state_file.exists():
        progress("a lab is up already: taking it down first")
        down(lab, progress)
    dc = queries.dc_template(store)
    nodes = [n for n in queries.nodes(store, rack=slot) if n.role == "compute"][:hn_count]
    if len(nodes) < hn_count:
        raise InputError(f"rack-{slot} has {len(nodes)} HNs; --hns {hn_count} asks for more")
    if not nodes:
        raise InputError(f"rack-{slot} has no HNs: install it first (ctmanager rack install)")
    lab.root.mkdir(parents=True, exist_ok=True)
    lab.write_state({"slot": slot, "hns": [n.hostname for n in nodes], "pids": {}})
    net = rack_context(dc, slot).net
    mgrs = managers.plan(lab, slot, net, manager_count)
    lab.write_state({**lab.read_state(), "managers": [m.as_json() for m in mgrs]})
    progress(f"network: bridge {lab.bridge(slot)} {net.gateway}/{net.prefixlen}")
    _bridge(lab, slot, f"{net.gateway}/{net.prefixlen}")
    progress("storage: prototype (host /usr bound read-only), software trees, per-CT /data")
    cts = queries.cts(store, rack=slot)
    graphite = metricsct.relay(cts)  # the agents' and the manager's own metrics go there
    _storage(lab, dc, cts)
    progress("keys: rack HMAC key, manager SSH key")
    lab.keys.mkdir(mode=0o700, exist_ok=True)
    write_atomic(lab.rack_key, (secrets.token_hex(32) + "\n").encode(), 0o600)
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ctmanager-lab", "-f", str(lab.ssh_key))
    write_atomic(lab.authorized_keys, (layout.manager_key_line(Path(f"{lab.ssh_key}.pub").read_text())).encode(), 0o644)
    known = []
    rack_hns = [n for n in queries.nodes(store, rack=slot) if n.role == "compute"]
    for node in nodes:
        progress(f"{node.hostname}: namespace {lab.netns(node.hostname)}, {node.ip}, sshd, ctagent, watchdog")
        known.append(_hn(lab, dc, slot, node, net, rack_hns, graphite, [m.ip for m in mgrs]))
    stores = [n for n in queries.nodes(store, rack=slot) if n.role == "storage"]
    for node in stores:
        progress(f"{node.hostname}: namespace {lab.netns(node.hostname)}, {node.ip}, sshd for ctstorage")
        known.append(storagenodes.up(lab, dc_lab or lab, slot, node, net, sh, spawn))
    write_atomic(lab.known_hosts, ("".join(known)).encode(), 0o644)
    for m in mgrs:
        write_atomic(m.config, (layout.manager_toml(lab, slot, m.ip, REPORT_PORT, graphite, m.name,
                                                storagenodes.storage_known_hosts(dc_lab or lab))).encode(), 0o644)
        managers.network(lab, slot, net, m, sh)
    write_atomic(lab.inventory, (layout.inventory_toml(lab, store.path, slot, nodes, net.gateway,
                                                   [(m.name, m.log, m.config) for m in mgrs], stores)).encode(), 0o644)
    lab.write_state({**lab.read_state(), "store": str(store.path)})
    if dns:
        dnsserver.up(lab, store, dc, lab.bridge(slot), spawn, progress)
        borders.up(lab, dc, sh, spawn, progress)  # the DC's border routers and the clouds they peer with
    for node in stores:
        address = backupnodes.attach(lab, dc_lab or lab, dc, node, sh, spawn)
        if address:
            progress(f"{node.hostname}: ctbackup (RPO {backupnodes.RPO} s) to the backup node {address} of "
                     f"{dc.realm_of(slot) or 'its slots'}")
    for m in mgrs:
        progress(f"manager {m.name} of rack-{slot} ({m.ip}{', namespace ' + m.netns if m.netns else ''}): "
                 "ctmanager run")
        managers.start(lab, m, spawn)


def _bridge(lab: layout.Lab, slot: int, address: str) -> None:
    br = lab.bridge(slot)
    if sh("ip", "link", "show", br, check=False).returncode != 0:
        sh("ip", "link", "add", br, "type", "bridge")
        pin_mac(br)
    sh("ip", "addr", "replace", address, "dev", br)
    sh("ip", "link", "set", br, "up")


def _storage(lab: layout.Lab, dc: DcTemplate, cts: list[Ct]) -> None:
    prototype(lab)
    software(lab, dc.environments)
    for ct in cts:
        seed_data(lab, dc, ct)
    lab.logs.mkdir(exist_ok=True)


def software(lab: layout.Lab, envs: tuple[str, ...]) -> None:
    """One RO software tree per environment."""
    for env in envs:
        (lab.root / "sw" / env).mkdir(parents=True, exist_ok=True)
        write_atomic(lab.root / "sw" / env / "VERSION", f"{env} software tree (lab)\n".encode(), 0o644)
        monitoring_sw(lab.root / "sw" / env)


def prototype(lab: layout.Lab) -> None:
    """The RO prototype root: this machine's /usr bound read-only, the mount points."""
    proto = lab.proto
    for d in ("usr", "sw", "data", "proc", "sys", "dev", "tmp", "run", "etc", "root", "var/tmp"):
        (proto / d).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        if not (proto / link).is_symlink():
            (proto / link).symlink_to(target)
    for f in ("passwd", "group", "nsswitch.conf"):
        write_atomic(proto / "etc" / f, Path(f"/etc/{f}").read_bytes(), 0o644)
    write_atomic(proto / "etc" / "hosts", b"127.0.0.1 localhost\n", 0o644)
    if not (proto / "etc" / "mtab").is_symlink():
        (proto / "etc" / "mtab").symlink_to("/proc/self/mounts")  # collectd's df plugin reads it
    (proto / "etc" / "resolv.conf").touch()  # mount point of the per-CT file
    if str(proto / "usr") not in lab.mounts_under():  # not os.path.ismount: blind to same-device binds
        sh("mount", "--bind", "/usr", str(proto / "usr"))
        sh("mount", "-o", "remount,ro,bind", str(proto / "usr"))


def monitoring_sw(sw: Path) -> None:
    """What a software tree holds for monitoring: collectd's base config and the
    tagged plugin repo, and ctautolink with the Python it needs (the CTs run the
    host's Debian python3, through the prototype's /usr)."""
    import pyinotify

    from ..paths import data_dir

    shutil.copytree(data_dir("collectd"), sw / "collectd", dirs_exist_ok=True)
    lib = sw / "lib" / "python"
    shutil.copytree(Path(__file__).resolve().parents[1], lib / "ctmanager", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    write_atomic(lib / "pyinotify.py", Path(pyinotify.__file__).read_bytes(), 0o644)
    (sw / "bin").mkdir(exist_ok=True)
    tool = sw / "bin" / "ctautolink"
    write_atomic(tool, (b"#!/bin/sh\nPYTHONPATH=/sw/lib/python exec /usr/bin/python3 -m ctmanager.monitoring.ctautolink \"$@\"\n"), 0o755)


def seed_data(lab: layout.Lab, dc: DcTemplate, ct: Ct) -> None:
    """What provisioning puts on a new CT's /data: its services for svscan. Every
    lab CT runs a small HTTP service (its hostname at /), under supervise; the
    rack's metrics CT also runs carbon."""
    data = Path(ctfiles.data_dir(lab.paths(), ct))
    if ct.service == metricsct.SERVICE:
        metricsct.seed(data, dc, ct)
    (data / "www").mkdir(parents=True, exist_ok=True)
    write_atomic(data / "www" / "index.html", f"{ct.hostname} ({ct.tenant or ct.service or 'ct'}) CT {ct.ctid}\n".encode(), 0o644)
    write_service(data, "httpd",
                  "#!/bin/sh\nexec /usr/bin/python3 -m http.server 80 --bind 0.0.0.0 --directory /data/www 2>&1\n")


def _hn(lab: layout.Lab, dc: DcTemplate, slot: int, node: Node, net: RackNet, rack_hns: list[Node],
        graphite: str, manager_ips: list[str]) -> str:
    name, ns = node.hostname, lab.netns(node.hostname)
    hdir = lab.hn_dir(name)
    (hdir / "state").mkdir(parents=True, exist_ok=True)
    (hdir / "lxc").mkdir(exist_ok=True)
    if sh("ip", "netns", "list", check=False).stdout.find(ns) < 0:
        sh("ip", "netns", "add", ns)
    host_end = lab.veth(slot, node.position)
    lab.write_state({**lab.read_state(), "links": {**lab.read_state().get("links", {}), name: host_end}})
    if sh("ip", "link", "show", host_end, check=False).returncode != 0:
        sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
    sh("ip", "link", "set", host_end, "master", lab.bridge(slot), "up")
    bridge = net.bridge
    for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "link", "add", bridge, "type", "bridge"],
                ["ip", "link", "set", "eth0", "master", bridge], ["ip", "link", "set", "eth0", "up"],
                ["ip", "link", "set", bridge, "up"],
                ["ip", "addr", "replace", f"{node.ip}/{net.prefixlen}", "dev", bridge],
                ["ip", "route", "replace", "default", "via", net.gateway]):
        sh(*cmd, ns=ns, check=cmd[2] != "add")
    pin_mac(bridge, "eth0", ns=ns)
    host_key = hdir / "ssh_host_ed25519_key"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(host_key))
    write_atomic(hdir / "sshd_config", (layout.sshd_config(lab, node, host_key)).encode(), 0o644)
    agent = layout.agent_toml(lab, dc, slot, node, manager_ips, REPORT_PORT, rack_hns, graphite)
    write_atomic(hdir / "ctagent.toml", agent.encode(), 0o644)
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    pid = spawn(["ip", "netns", "exec", ns, sys.executable, "-m", "ctmanager.lab.hn_init",
                  str(hdir / "sshd_config"), layout.ctagent_path(), str(hdir / "ctagent.toml")],
                 lab.logs / f"{name}.log")
    lab.set_pid(name, pid)
    pub = Path(f"{host_key}.pub").read_text().split()
    return f"{node.ip} {pub[0]} {pub[1]}\n"


def spawn(argv: list[str], log: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, cwd="/")
    return p.pid


def down(lab: layout.Lab, progress: Callable[[str], None]) -> None:
    """Remove what `up` made: CTs, processes, namespaces, links, the /usr bind
    mount, the lab folder. Works from the naming scheme, not only the state
    file, so a half-made or half-removed lab goes too; safe to run twice."""
    state = lab.read_state()
    racks = [layout.Lab(root) for root in state.get("racks", [])] + [lab]  # a DC lab's other racks, then this
    dnsserver.forget(lab)
    namespaces = [ns for ns in sh("ip", "netns", "list", check=False).stdout.split() if ns.startswith(layout.NETNS_PREFIX)]
    for here in racks:
        hn_root = here.root / "hn"
        for hdir in sorted(hn_root.iterdir()) if hn_root.is_dir() else ():
            ns, lxcpath = here.netns(hdir.name), hdir / "lxc"
            if ns in namespaces and lxcpath.is_dir():
                for ct in sorted(p.name for p in lxcpath.iterdir() if is_digits(p.name)):
                    sh("lxc-stop", "-P", str(lxcpath), "-n", ct, "-k", ns=ns, check=False)
        pids = here.read_state().get("pids", {})
        _kill_groups(list(pids.values()))  # all at once: one deadline, not one per process
        for name in pids:
            progress(f"stopped {name}")
    for ns in namespaces:
        # lxc-monitord and CT monitors leave the process groups; anything still in
        # the namespace keeps it (and its veth) alive after `ip netns del`.
        for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
            _kill(int(pid), signal.SIGKILL)
        sh("ip", "netns", "del", ns, check=False)
    for link in sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        name = link.split(":")[1].strip().split("@")[0] if ":" in link else ""
        if layout.is_lab_link(name):
            sh("ip", "link", "del", name, check=False)
    storagenodes.restore_routing(lab)
    for point in reversed(lab.mounts_under()):
        sh("umount", point, check=False)
    if lab.root.exists():
        mounted = lab.mounts_under()
        if mounted:  # never rm -rf through a mount (the prototype binds the host's /usr)
            raise LabError(f"not deleting {lab.root}: still mounted: {', '.join(mounted)}")
        shutil.rmtree(lab.root)
    progress(f"removed {lab.root}")


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _kill_groups(pids: list[int]) -> None:
    """SIGTERM every process group, wait (8 s at most, for all of them together),
    then SIGKILL what is left."""
    alive = []
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGTERM)
            alive.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 8
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if _group_alive(pid)]
    for pid in alive:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True
