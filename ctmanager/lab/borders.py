"""The lab's border routers and the clouds they peer with (real BIRD 2, real BGP/BFD).

Per `[borders.NAME]`: a namespace ctlab-NAME whose uplink is a veth to the host (the
lab's stand-in for the DC core: it routes the peerings' cloud CIDRs to the border, as
a core would learn them from it), running BIRD with the config `peering config`
renders. Per VPC (the peerings that accept the same CIDRs): a namespace ctlab-cloud-N
playing the provider: its own BIRD announcing the VPC's CIDRs over every link, a
TCP listener on each cloud service address.

Each dedicated link is a veth between the border (named like the rendered VLAN
sub-interface, vl<id>) and the cloud: this kernel has no 802.1Q devices, so the
segment is carried untagged; the networkd VLAN files are rendered and checked as
text only. IPsec peerings are rendered (and loaded by charon in the tests) but not
brought up here. What the provider announces is a file of static routes the faults
change (`lab fault cloud-announce/-withdraw`), and a link is cut silently (nft drops
everything on the cloud's end, as a provider fault would: the carrier stays up).
"""

from __future__ import annotations

import ipaddress
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..dc.model import Border, DcTemplate, Peering
from ..errors import InputError
from ..files import write_atomic
from ..peering import files
from . import layout, storagenodes

Sh = Callable[..., Any]
Spawn = Callable[[list[str], Path], int]
HOST_LINK = "169.254.255.254"  # the host's end of every border uplink (a /32 with device routes)
LISTEN_PORT = 80
CUT_TABLE = "ctmcut"


def folder(lab: layout.Lab, name: str) -> Path:
    return lab.root / "border" / name


def socket(lab: layout.Lab, name: str) -> Path:
    """The border's BIRD control socket (`birdc -s`, `peering status --lab-dir`)."""
    return folder(lab, name) / "bird.ctl"


def clouds(dc: DcTemplate) -> list[tuple[str, list[Peering]]]:
    """(cloud name, its peerings): one cloud per distinct set of accepted CIDRs; IPsec peerings aside."""
    groups: dict[tuple[ipaddress.IPv4Network, ...], list[Peering]] = {}
    for p in dc.peerings:
        if p.kind == "vlan":
            groups.setdefault(p.accept, []).append(p)
    return [(f"cloud-{i + 1}", ps) for i, ps in enumerate(groups.values())]


def cloud_link(p: Peering) -> str:
    return f"cl{p.vlan}"


def up(lab: layout.Lab, dc: DcTemplate, sh: Sh, spawn: Spawn, progress: Callable[[str], None]) -> None:
    if not dc.peerings:
        return
    storagenodes.route_between_racks(lab)  # the host is the DC's core: it forwards between racks and borders
    for i, b in enumerate(dc.borders):
        _border(lab, dc, b, i, sh)
    for name, ps in clouds(dc):
        _cloud(lab, dc, name, ps, sh, spawn)
        progress(f"{name}: namespace {layout.NETNS_PREFIX}{name} playing the provider of "
                 f"{', '.join(map(str, ps[0].accept))} over {', '.join(p.name for p in ps)} (BIRD, a listener on "
                 f"{', '.join(a for _, a in ps[0].services) or 'no service address'})")
    for b in dc.borders:
        here = folder(lab, b.name)
        for rel, text in files.border_files(dc, b).items():
            path = here / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, text.encode(), 0o644)
        pid = spawn(["ip", "netns", "exec", layout.Lab.netns(b.name), "bird", "-f", "-c", str(here / "bird.conf"),
                     "-s", str(socket(lab, b.name)), "-P", str(here / "bird.pid")], lab.logs / f"{b.name}.log")
        lab.set_pid(b.name, pid)
        progress(f"{b.name}: namespace {layout.Lab.netns(b.name)} at {b.address}, BIRD with the rendered config "
                 f"({len([p for p in dc.peerings if p.border == b.name])} peerings; VLANs carried untagged here)")
    lab.write_state({**lab.read_state(), "clouds": {n: [p.name for p in ps] for n, ps in clouds(dc)}})


def _border(lab: layout.Lab, dc: DcTemplate, b: Border, i: int, sh: Sh) -> None:
    ns, host_end = layout.Lab.netns(b.name), f"ctlb{i}"
    if ns not in sh("ip", "netns", "list", check=False).stdout.split():
        sh("ip", "netns", "add", ns)
    if sh("ip", "link", "show", host_end, check=False).returncode != 0:
        sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", b.uplink, "netns", ns)
    sh("ip", "link", "set", host_end, "up")
    sh("ip", "addr", "replace", f"{HOST_LINK}/32", "dev", host_end)
    sh("ip", "route", "replace", f"{b.address}/32", "dev", host_end)
    for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "link", "set", b.uplink, "up"],
                ["ip", "addr", "replace", f"{b.address}/32", "dev", b.uplink],
                ["ip", "route", "replace", f"{HOST_LINK}/32", "dev", b.uplink],
                ["ip", "route", "replace", "default", "via", HOST_LINK, "dev", b.uplink],
                ["sysctl", "-qw", "net.ipv4.ip_forward=1"], ["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"]):
        sh(*cmd, ns=ns)
    for p in dc.peerings:
        if p.border == b.name:
            for net in p.accept:  # the core's route to the cloud: via its border
                sh("ip", "route", "replace", str(net), "via", b.address, "dev", host_end)


def _cloud(lab: layout.Lab, dc: DcTemplate, name: str, ps: list[Peering], sh: Sh, spawn: Spawn) -> None:
    ns, here = layout.Lab.netns(name), folder(lab, name)
    here.mkdir(parents=True, exist_ok=True)
    if ns not in sh("ip", "netns", "list", check=False).stdout.split():
        sh("ip", "netns", "add", ns)
    for cmd in (["ip", "link", "set", "lo", "up"], ["sysctl", "-qw", "net.ipv4.ip_forward=1"],
                ["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"]):
        sh(*cmd, ns=ns)
    for p in ps:
        border_ns = layout.Lab.netns(p.border)
        if sh("ip", "link", "show", p.link, ns=border_ns, check=False).returncode != 0:
            sh("ip", "link", "add", p.link, "type", "veth", "peer", "name", cloud_link(p), "netns", ns, ns=border_ns)
        sh("ip", "addr", "replace", str(p.local), "dev", p.link, ns=border_ns)
        sh("ip", "link", "set", p.link, "up", ns=border_ns)
        sh("ip", "addr", "replace", f"{p.remote}/{p.local.network.prefixlen}", "dev", cloud_link(p), ns=ns)
        sh("ip", "link", "set", cloud_link(p), "up", ns=ns)
    services = sorted({a for p in ps for _, a in p.services})
    for addr in services:
        sh("ip", "addr", "replace", f"{addr}/32", "dev", "lo", ns=ns)
    announce = here / "announce.json"
    if not announce.exists():
        write_atomic(announce, (json.dumps([str(n) for n in ps[0].accept]) + "\n").encode(), 0o644)
    write_cloud_config(lab, name, ps)
    pid = spawn(["ip", "netns", "exec", ns, "bird", "-f", "-c", str(here / "bird.conf"), "-s", str(here / "bird.ctl"),
                 "-P", str(here / "bird.pid")], lab.logs / f"{name}.log")
    lab.set_pid(name, pid)
    if services:
        pid = spawn(["ip", "netns", "exec", ns, sys.executable, "-m", "ctmanager.lab.cloudlisten", str(LISTEN_PORT),
                     name, *services], lab.logs / f"{name}-listener.log")
        lab.set_pid(f"{name}-listener", pid)


def write_cloud_config(lab: layout.Lab, name: str, ps: list[Peering]) -> None:
    """The provider's BIRD: one session per link, announcing what announce.json holds."""
    here = folder(lab, name)
    announced = [ipaddress.IPv4Network(n) for n in json.loads((here / "announce.json").read_text())]
    lines = [f"# the lab's provider {name} (not rendered by ctmanager: it plays the other side)",
             f"router id {ps[0].remote};", "protocol device { scan time 10; }",
             "protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; }",
             "protocol static announce {", "  ipv4;", *[f"  route {n} blackhole;" for n in announced], "}"]
    bfd = [p for p in ps if p.bfd]
    if bfd:
        lines += ["protocol bfd {"]
        lines += [f'  interface "{cloud_link(p)}" {{ interval {p.bfd.interval_ms} ms; multiplier {p.bfd.multiplier}; }};'
                  for p in bfd if p.bfd]
        lines += ["}"]
    for p in ps:
        lines += [f"protocol bgp l{p.vlan} {{", f"  local {p.remote} as {p.peer_asn};",
                  f"  neighbor {p.local.ip} as {p.asn};", f'  interface "{cloud_link(p)}";', "  direct;",
                  f"  hold time {p.hold_time};", f"  keepalive time {max(1, p.hold_time // 3)};",
                  "  connect retry time 5;", "  error wait time 1, 30;", *(["  bfd on;"] if p.bfd else []),
                  "  ipv4 { import all; export where proto = \"announce\"; };", "}"]
    write_atomic(here / "bird.conf", ("\n".join(lines) + "\n").encode(), 0o644)


def cloud_of(lab: layout.Lab, peering: str) -> str:
    for name, peerings in lab.read_state().get("clouds", {}).items():
        if peering in peerings:
            return str(name)
    raise LookupError(peering)


def _peering(lab: layout.Lab, dc: DcTemplate, name: str) -> Peering:
    p = files.find(dc, name)
    try:
        cloud_of(lab, name)
    except LookupError:
        raise InputError(f"peering {name!r} is not up in this lab (only VLAN peerings are)") from None
    return p


def cut(lab: layout.Lab, dc: DcTemplate, name: str, sh: Sh, say: Callable[[str], None]) -> None:
    """Everything on the peering's link dropped at the provider's end; the carrier stays up."""
    p = _peering(lab, dc, name)
    ns, link = layout.Lab.netns(cloud_of(lab, name)), cloud_link(p)
    if sh("nft", "list", "table", "inet", CUT_TABLE, ns=ns, check=False).returncode != 0:
        sh("nft", "add", "table", "inet", CUT_TABLE, ns=ns)
        for chain, hook in (("i", "input"), ("o", "output"), ("f", "forward")):
            sh("nft", "add", "chain", "inet", CUT_TABLE, chain, f"{{ type filter hook {hook} priority 0 ; }}", ns=ns)
    for chain, match in (("i", "iifname"), ("o", "oifname"), ("f", "iifname"), ("f", "oifname")):
        sh("nft", "add", "rule", "inet", CUT_TABLE, chain, match, link, "drop", ns=ns)
    say(f"peering {name}: link cut (everything on {link} dropped at the provider's end)")


def uncut(lab: layout.Lab, say: Callable[[str], None], sh: Sh) -> None:
    for cloud in lab.read_state().get("clouds", {}):
        if sh("nft", "delete", "table", "inet", CUT_TABLE, ns=layout.Lab.netns(cloud), check=False).returncode == 0:
            say(f"{cloud}: links whole again")


def announce(lab: layout.Lab, dc: DcTemplate, peering: str, prefix: str, sh: Sh, withdraw: bool,
             say: Callable[[str], None]) -> None:
    """The provider announces (or withdraws) `prefix` on every link of the peering's cloud."""
    _peering(lab, dc, peering)
    try:
        net = ipaddress.IPv4Network(prefix)
    except ValueError:
        raise InputError(f"{prefix!r} is not an IPv4 prefix like 172.31.0.0/16", where="PREFIX") from None
    cloud = cloud_of(lab, peering)
    here = folder(lab, cloud)
    have = json.loads((here / "announce.json").read_text())
    want = [n for n in have if n != str(net)] + ([] if withdraw else [str(net)])
    write_atomic(here / "announce.json", (json.dumps(want) + "\n").encode(), 0o644)
    names = lab.read_state()["clouds"][cloud]
    write_cloud_config(lab, cloud, [p for p in dc.peerings if p.name in names])
    sh("birdc", "-s", str(here / "bird.ctl"), "configure")
    say(f"{cloud}: {'withdrew' if withdraw else 'announces'} {net} (announcing: {', '.join(want) or 'nothing'})")
