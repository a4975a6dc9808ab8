"""BIRD 2 config of one border router: one eBGP session per peering it ends, with
strict filters. Import: only the peering's cloud CIDRs (a /28 at the longest), never
a default route, never anything of the DC's own space, at most `max_prefixes`
routes (more and the session restarts). Export: only the rack networks that use the
peering. BFD on the links that ask for it. The clouds' routes go to the border's
kernel table; the racks' routes stay in BIRD (it announces, never installs them).

Every value comes from the validated DC template (labels, addresses, integers): no
text of a user's reaches the config unchecked. `bird -p -c FILE` parses it.
"""

from __future__ import annotations

import ipaddress

from ..dc.model import Border, DcTemplate, Peering
from ..dc.network import rack_network

LONGEST = 28  # the longest prefix accepted inside a cloud CIDR


def ident(name: str) -> str:
    """A BIRD symbol for a peering's name (labels: a-z, 0-9, '-')."""
    return "p_" + name.replace("-", "_")


def dc_space(dc: DcTemplate) -> list[str]:
    """What the DC routes itself: its supernet, and every address it holds outside it."""
    nets = [str(dc.network.supernet)]
    held = [a for addrs in dc.zone_services.values() for a in addrs] + [r.backup for r in dc.slots if r.backup]
    held += [b.address for b in dc.borders]
    nets += sorted({f"{a}/32" for a in held if ipaddress.IPv4Address(a) not in dc.network.supernet})
    return nets


def _racks(dc: DcTemplate, p: Peering) -> list[str]:
    return [str(rack_network(dc.network.supernet, s)) for s in p.racks]


def render(dc: DcTemplate, border: Border) -> str:
    mine = [p for p in dc.peerings if p.border == border.name]
    racks = sorted({n for p in mine for n in _racks(dc, p)}, key=ipaddress.IPv4Network)
    out = [f"# BIRD 2 config of border router {border.name} (DC {dc.name}), rendered by ctmanager:",
           "# `ctmanager peering config OUT` writes it again. Do not edit here.",
           f"router id {border.address};",
           "log syslog all;",
           "",
           "# the DC's own space: never accepted from a cloud, whatever a filter below says",
           f"define DC_SPACE = [ {', '.join(n + '+' for n in dc_space(dc))} ];",
           "",
           "protocol device { scan time 10; }",
           "",
           "# the racks that use a peering: announced to the clouds, never installed here",
           "protocol static dc_racks {",
           "  ipv4;"]
    out += [f"  route {n} blackhole;" for n in racks]
    out += ["}",
            "",
            "# the clouds' routes into the kernel, and nothing else",
            "protocol kernel {",
            "  ipv4 { import none; export where source = RTS_BGP; };",
            "}"]
    bfd = [p for p in mine if p.bfd]
    if bfd:
        out += ["", "protocol bfd {"]
        for p in bfd:
            assert p.bfd is not None
            out.append(f'  interface "{p.link}" {{ interval {p.bfd.interval_ms} ms; '
                       f"multiplier {p.bfd.multiplier}; }};")
        out.append("}")
    for p in mine:
        out += [""] + _peering(dc, p)
    return "\n".join(out) + "\n"


def _peering(dc: DcTemplate, p: Peering) -> list[str]:
    name = ident(p.name)
    accept = ", ".join(f"{n}{{{n.prefixlen},{max(n.prefixlen, LONGEST)}}}" for n in p.accept)
    link = f"VLAN {p.vlan} on {p.interface}" if p.kind == "vlan" else f"IPsec tunnel {p.tunnel_id} to {p.gateway}"
    return [
        f"# peering {p.name}: {link}, AS {p.peer_asn}",
        f"filter {name}_in {{",
        "  if net.len = 0 then reject;     # never a default route",
        "  if net ~ DC_SPACE then reject;  # never the DC's own space, nor a longer prefix of it",
        f"  if net ~ [ {accept} ] then accept;",
        "  reject;",
        "}",
        f"filter {name}_out {{",
        f"  if proto = \"dc_racks\" && net ~ [ {', '.join(_racks(dc, p))} ] then accept;",
        "  reject;",
        "}",
        f"protocol bgp {name} {{",
        f'  description "peering {p.name}";',
        f"  local {p.local.ip} as {p.asn};",
        f"  neighbor {p.remote} as {p.peer_asn};",
        f'  interface "{p.link}";',
        "  direct;",
        f"  hold time {p.hold_time};",
        f"  keepalive time {max(1, p.hold_time // 3)};",
        "  connect retry time 5;",
        "  error wait time 1, 30;",
        *(["  bfd on;"] if p.bfd else []),
        "  ipv4 {",
        f"    import filter {name}_in;",
        f"    export filter {name}_out;",
        f"    import limit {p.max_prefixes} action restart;",
        "  };",
        "}",
    ]
