"""Everything a border router gets, as relative path -> text, and a peering as plain
data (for `peering show --json` and the tables)."""

from __future__ import annotations

from typing import Any, TypeVar

from ..dc.model import Border, DcTemplate, Peering, rack_name
from ..errors import NotFoundError
from . import bird, links

T = TypeVar("T", Border, Peering)


def border_files(dc: DcTemplate, border: Border) -> dict[str, str]:
    """bird.conf, network/* (systemd-networkd) and, with IPsec peerings, swanctl.conf."""
    files = {"bird.conf": bird.render(dc, border)}
    files.update({f"network/{name}": text for name, text in links.networkd(dc, border).items()})
    swan = links.swanctl(dc, border)
    if swan is not None:
        files["swanctl.conf"] = swan
    return files


def rack_routes(dc: DcTemplate) -> dict[str, str]:
    """Per rack that uses a peering, `routes/rack-N.txt`: the routes its gateway (the ToR,
    or the DC core behind it) needs so the rack's HNs and CTs reach the clouds via their
    border router, one `ip route` argument line each."""
    by_border = {b.name: b for b in dc.borders}
    out: dict[str, str] = {}
    for slot in sorted({s for p in dc.peerings for s in p.racks}):
        routes: dict[str, list[str]] = {}
        for p in dc.peerings_of(slot):
            for net in p.accept:
                routes.setdefault(f"{net} via {by_border[p.border].address}", []).append(p.name)
        lines = [f"# rack-{slot}: routes to the clouds it peers with, for its gateway (rendered by ctmanager)"]
        lines += [f"{route}  # peering {', '.join(names)}" for route, names in sorted(routes.items())]
        out[f"routes/{rack_name(slot)}.txt"] = "\n".join(lines) + "\n"
    return out


def find(dc: DcTemplate, name: str) -> Peering:
    return _named(dc.peerings, name, "peering")


def border(dc: DcTemplate, name: str) -> Border:
    return _named(dc.borders, name, "border router")


def _named(items: tuple[T, ...], name: str, what: str) -> T:
    for item in items:
        if item.name == name:
            return item
    known = ", ".join(i.name for i in items) or "none in the DC template"
    raise NotFoundError(f"no {what} {name!r} ({what.split()[0]}s: {known})")


def as_dict(p: Peering) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": p.name, "kind": p.kind, "border": p.border, "link": p.link, "local": str(p.local),
        "remote": str(p.remote), "asn": p.asn, "peer_asn": p.peer_asn, "accept": [str(n) for n in p.accept],
        "racks": [rack_name(s) for s in p.racks], "max_prefixes": p.max_prefixes, "hold_time": p.hold_time,
        "bfd": None if p.bfd is None else {"interval_ms": p.bfd.interval_ms, "multiplier": p.bfd.multiplier},
        "services": dict(p.services), "interface": p.interface,
    }
    if p.kind == "vlan":
        out["vlan"] = p.vlan
    else:
        out.update({"tunnel_id": p.tunnel_id, "gateway": p.gateway, "local_gateway": p.local_gateway,
                    "secret_file": p.secret_file})
    return out
