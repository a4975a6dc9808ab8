"""Delivery manifests: the servers of one rack, by position, as shipped."""

from __future__ import annotations

from pathlib import Path

from .. import validate as v
from . import tomlread
from .model import DcTemplate, NodeSpec


def load(path: Path | str, dc: DcTemplate) -> tuple[NodeSpec, ...]:
    top = tomlread.load(Path(path))
    tables = top.tables("nodes", required=True)
    top.done()
    nodes: list[NodeSpec] = []
    seen: dict[str, dict[object, int]] = {"position": {}, "serial": {}, "mac": {}}
    max_pos = dc.network.nodes.size
    for i, t in enumerate(tables):
        position = t.check("position", lambda x, f: v.position(x, f, maximum=max_pos), t.int("position"))
        sku = t.str("sku")
        if sku not in dc.skus:
            raise t.error("sku", f"unknown SKU {sku!r} (the DC template has: {', '.join(sorted(dc.skus))})")
        serial = t.check("serial", v.serial, t.str("serial"))
        mac = t.check("mac", v.mac, t.str("mac"))
        t.done()
        for key, value in (("position", position), ("serial", serial), ("mac", mac)):
            if value in seen[key]:
                raise t.error(key, f"{value} is also used by nodes[{seen[key][value]}]")
            seen[key][value] = i
        nodes.append(NodeSpec(position, sku, serial, mac))
    roles = {dc.skus[n.sku].role for n in nodes}
    for role in ("compute", "storage"):
        if role not in roles:
            raise top.error("nodes", f"a rack needs at least one {role} node")
    return tuple(sorted(nodes, key=lambda n: n.position))
