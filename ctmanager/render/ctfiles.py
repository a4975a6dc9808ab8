"""What is rendered for each CT and each storage node, and the context each
template sees: validated values in attribute objects (`ct.hostname`).

Attribute objects, not dicts: jinja resolves `x.y` with getattr() first, and on a
dict that getattr() fails and raises before the item lookup, about 1 us a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace as View
from typing import Any

from ..dc.model import Ct, DcTemplate, Node, Paths, rack_name
from ..dc.network import RackContext, RackNet, search_domains
from ..wire.spec import Spec

# (output path pattern inside the rack folder, template, mode)
CT_FILES: tuple[tuple[str, str, int], ...] = (
    ("openvz/{ctid}.conf", "ct/openvz/ctid.conf.j2", 0o644),
    ("openvz/{ctid}.mount", "ct/openvz/ctid.mount.j2", 0o755),
    ("openvz/{ctid}.umount", "ct/openvz/ctid.umount.j2", 0o755),
    ("lxc/{ctid}.config", "ct/lxc/config.j2", 0o644),
    ("resolv/{ctid}.conf", "ct/common/resolv.conf.j2", 0o644),
)
EXPORTS_FILE = ("storage/{hostname}.exports", "storage/exports.j2", 0o644)
TEMPLATES = [t for _, t, _ in CT_FILES] + [EXPORTS_FILE[1]]

INODES_PER_GB = 65536  # simfs inode barrier: generous for small-file apps
DISK_HARD = 1.1  # OpenVZ limit = barrier + 10 %


def ct_context(ct: Ct, dc: DcTemplate, rack: RackContext) -> dict[str, Any]:
    return ct_view(ct, dc_name=dc.name, rack=rack.name, net=rack.net, nameservers=dc.resolvers,
                   search=search_domains(ct, dc, rack), paths=dc.paths)


def ct_view(ct: Ct, *, dc_name: str, rack: str, net: RackNet, nameservers: Sequence[str], search: Sequence[str],
            paths: Paths) -> dict[str, Any]:
    """The context of one CT's templates. The manager renders with the DC's paths,
    an agent with its own HN's (the same CT spec, see wire.spec)."""
    r = ct.resources
    disk_hard, inodes, inodes_hard = disk_limits(r.disk)
    role = f"tenant {ct.tenant}" if ct.tenant else (f"service {ct.service}" if ct.service else "ct")
    p = paths
    return {
        "dc": View(name=dc_name),
        "rack": View(name=rack),
        "net": net,
        "ct": View(
            ctid=ct.ctid,
            hostname=ct.hostname,
            tenant=ct.tenant,
            service=ct.service,
            role=role,
            env=ct.env,
            ip=ct.ip,
            apps=list(ct.apps),
        ),
        "res": View(
            memory=r.memory,
            swap=r.swap,
            disk=r.disk,
            disk_hard=disk_hard,
            inodes=inodes,
            inodes_hard=inodes_hard,
            cpus=r.cpus,
            cpuunits=r.cpuunits,
            cpulimit=r.cpulimit,
        ),
        "dns": View(nameservers=list(nameservers), search=list(search)),
        "paths": View(
            prototype=p.prototype,
            sw=f"{p.software}/{ct.env}",
            data=data_dir(p, ct),
            resolv=f"{p.config}/{ct.ctid}/resolv.conf",
            ve_root=p.ve_root,
            ve_private=p.ve_private,
        ),
    }


def spec_context(spec: Spec, paths: Paths) -> dict[str, Any]:
    """The template context of a CT spec (what an agent renders), with this HN's paths."""
    net = RackNet(bridge=spec.bridge, prefixlen=spec.prefixlen, gateway=spec.gateway, network="")
    return ct_view(spec.ct, dc_name=spec.dc, rack=rack_name(spec.ct.rack), net=net,
                   nameservers=spec.nameservers, search=spec.search, paths=paths)


def disk_limits(disk: int) -> tuple[int, int, int]:
    """OpenVZ's disk limits beside the barrier `disk`: (hard limit, inode barrier,
    inode limit), for the config file and for `vzctl set` alike."""
    gb = max(1, disk >> 30)
    return _round_k(int(disk * DISK_HARD)), gb * INODES_PER_GB, int(gb * INODES_PER_GB * DISK_HARD)


def data_dir(paths: Paths, ct: Ct) -> str:
    """Where a CT's /data is on an HN: under its storage node's mount."""
    return f"{paths.data}/{ct.storage}/{ct.ctid}"


def exports_context(dc: DcTemplate, rack: RackContext, node: Node, hns: list[Node], ct_count: int) -> dict[str, Any]:
    return {
        "rack": View(name=rack.name),
        "node": View(hostname=node.hostname, ip=node.ip),
        "hns": [hn.ip for hn in hns],
        "envs": list(dc.environments),
        "paths": View(export_root=dc.paths.export_root),
        "ct_count": ct_count,
    }


def _round_k(nbytes: int) -> int:
    return nbytes - nbytes % 1024
