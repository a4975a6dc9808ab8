"""What is rendered for each CT and each storage node, and the context each
template sees. The contexts are plain dicts of validated values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import template as dctemplate
from ..model import Ct, DcTemplate, Node, rack_name

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


@dataclass(frozen=True)
class RackContext:
    """What every CT of one rack shares: computed once per rack."""

    name: str
    net: dict[str, Any]
    infra_search: tuple[str, ...]


def rack_context(dc: DcTemplate, slot: int) -> RackContext:
    net = dctemplate.rack_network(dc.network.supernet, slot)
    name = rack_name(slot)
    return RackContext(
        name=name,
        net={
            "bridge": dc.network.bridge,
            "prefixlen": net.prefixlen,
            "gateway": str(net.network_address + dc.network.gateway),
            "network": str(net),
        },
        infra_search=(f"{name}.{dc.infra_zone}", dc.infra_zone),
    )


def ct_context(ct: Ct, dc: DcTemplate, rack: RackContext) -> dict[str, Any]:
    r = ct.resources
    gb = max(1, r.disk >> 30)
    search = ((f"{ct.tenant}.{dc.tenant_zone}.internal",) if ct.tenant else ()) + rack.infra_search
    role = f"tenant {ct.tenant}" if ct.tenant else (f"service {ct.service}" if ct.service else "ct")
    p = dc.paths
    return {
        "dc": {"name": dc.name},
        "rack": {"name": rack.name},
        "net": rack.net,
        "ct": {
            "ctid": ct.ctid,
            "hostname": ct.hostname,
            "tenant": ct.tenant,
            "service": ct.service,
            "role": role,
            "env": ct.env,
            "ip": ct.ip,
            "apps": list(ct.apps),
        },
        "res": {
            "memory": r.memory,
            "swap": r.swap,
            "disk": r.disk,
            "disk_hard": _round_k(int(r.disk * DISK_HARD)),
            "inodes": gb * INODES_PER_GB,
            "inodes_hard": int(gb * INODES_PER_GB * DISK_HARD),
            "cpus": r.cpus,
            "cpuunits": r.cpuunits,
            "cpulimit": r.cpulimit,
        },
        "dns": {"nameservers": list(dc.resolvers), "search": list(search)},
        "paths": {
            "prototype": p.prototype,
            "sw": f"{p.software}/{ct.env}",
            "data": f"{p.data}/{ct.storage}/{ct.ctid}",
            "resolv": f"{p.config}/{ct.ctid}/resolv.conf",
            "ve_root": p.ve_root,
            "ve_private": p.ve_private,
        },
    }


def exports_context(dc: DcTemplate, rack: RackContext, node: Node, hns: list[Node], ct_count: int) -> dict[str, Any]:
    return {
        "rack": {"name": rack.name},
        "node": {"hostname": node.hostname, "ip": node.ip},
        "hns": [hn.ip for hn in hns],
        "envs": list(dc.environments),
        "paths": {"export_root": dc.paths.export_root},
        "ct_count": ct_count,
    }


def _round_k(nbytes: int) -> int:
    return nbytes - nbytes % 1024
