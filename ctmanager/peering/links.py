"""A border router's links to the clouds, as systemd-networkd files (one VLAN
sub-interface per dedicated link, on the port it rides on; one XFRM interface per
IPsec tunnel) and strongSwan's swanctl.conf for the IPsec peerings (route-based:
the tunnel is an XFRM interface, BGP runs over it like over a VLAN).

The PSK never enters a rendered file: swanctl.conf includes the peering's
`secret_file` (mode 0600, written by ops: `secrets { ike-NAME { secret = … } }`).
"""

from __future__ import annotations

from collections import defaultdict

from ..dc.model import Border, DcTemplate, Peering

HEADER = "# Rendered by ctmanager for border router {border} (peering {peering}). Do not edit here.\n"
# IKEv2 proposals both AWS and GCE accept (AES-256-GCM, SHA-384 PRF, ECP-384)
IKE_PROPOSALS = "aes256gcm16-prfsha384-ecp384"
ESP_PROPOSALS = "aes256gcm16-ecp384"


def networkd(dc: DcTemplate, border: Border) -> dict[str, str]:
    """File name (under /etc/systemd/network) -> text."""
    mine = [p for p in dc.peerings if p.border == border.name]
    files: dict[str, str] = {}
    ports: dict[str, list[Peering]] = defaultdict(list)
    for p in mine:
        ports[p.interface].append(p)
        head = HEADER.format(border=border.name, peering=p.name)
        if p.kind == "vlan":
            files[f"20-ctm-{p.link}.netdev"] = (head + f"[NetDev]\nName={p.link}\nKind=vlan\n"
                                                f"Description=peering {p.name}\n\n[VLAN]\nId={p.vlan}\n")
        else:
            files[f"20-ctm-{p.link}.netdev"] = (head + f"[NetDev]\nName={p.link}\nKind=xfrm\n"
                                                f"Description=peering {p.name}\n\n[Xfrm]\nInterfaceId={p.tunnel_id}\n")
        files[f"20-ctm-{p.link}.network"] = (
            head + f"[Match]\nName={p.link}\n\n[Network]\nAddress={p.local}\n"
            # BIRD installs the clouds' routes; networkd must leave them alone
            "LinkLocalAddressing=no\nIPv6AcceptRA=no\nKeepConfiguration=static\n")
    for port, ps in sorted(ports.items()):
        lines = [f"# Rendered by ctmanager for border router {border.name}: the port {port}'s peerings.",
                 "[Match]", f"Name={port}", "", "[Network]"]
        lines += [f"{'VLAN' if p.kind == 'vlan' else 'Xfrm'}={p.link}" for p in sorted(ps, key=lambda p: p.link)]
        if any(p.kind == "ipsec" for p in ps):
            lines += [f"Address={p.local_gateway}/32" for p in ps if p.kind == "ipsec"]
        lines += ["LinkLocalAddressing=no", "IPv6AcceptRA=no"]
        files[f"10-ctm-{port}.network"] = "\n".join(lines) + "\n"
    return files


def swanctl(dc: DcTemplate, border: Border) -> str | None:
    """swanctl.conf of the border's IPsec peerings (None: it has none)."""
    mine = [p for p in dc.peerings if p.border == border.name and p.kind == "ipsec"]
    if not mine:
        return None
    out = [f"# strongSwan swanctl.conf of border router {border.name} (DC {dc.name}), rendered by ctmanager.",
           "# Route-based: each tunnel is an XFRM interface (if_id); BGP runs over it. Do not edit here.",
           "connections {"]
    for p in mine:
        out += [
            f"  {p.name} {{",
            "    version = 2",
            f"    local_addrs = {p.local_gateway}",
            f"    remote_addrs = {p.gateway}",
            f"    proposals = {IKE_PROPOSALS}",
            "    dpd_delay = 10s",
            "    rekey_time = 8h",
            f"    if_id_in = {p.tunnel_id}",
            f"    if_id_out = {p.tunnel_id}",
            "    local {",
            "      auth = psk",
            f"      id = {p.local_gateway}",
            "    }",
            "    remote {",
            "      auth = psk",
            f"      id = {p.gateway}",
            "    }",
            "    children {",
            f"      {p.name} {{",
            "        local_ts = 0.0.0.0/0",
            "        remote_ts = 0.0.0.0/0",
            f"        esp_proposals = {ESP_PROPOSALS}",
            "        start_action = start",
            "        dpd_action = restart",
            "        close_action = start",
            "      }",
            "    }",
            "  }",
        ]
    out += ["}", "", "secrets {"]
    out += [f"  include {p.secret_file}" for p in mine]
    out += ["}"]
    return "\n".join(out) + "\n"
