"""A BIND 9 configuration for the DC's zones, rendered from the DC template:
named.conf, one zone skeleton per zone (SOA + NS only: ctmanager publishes the
rest by RFC 2136), and a TSIG key made with `tsig-keygen` if none exists.

    ctmanager dns bind-config OUT [--listen 127.0.0.1] [--port 53]
    named -g -c OUT/named.conf

Knot and PowerDNS speak RFC 2136 as well; see README "DNS routing" for their
equivalents of `update-policy` and `allow-transfer`.
"""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

from .. import validate as v
from ..dc.model import DcTemplate
from ..errors import CtmError, InputError
from ..files import make_dirs, preflight, write_atomic
from .records import absolute, zones

KEY_NAME = "ctmanager"


def render(dc: DcTemplate, out: Path, listen: str, port: int) -> dict[str, Path]:
    """`listen`: one address, or several separated by commas."""
    try:
        addrs = [str(ipaddress.ip_address(a.strip())) for a in listen.split(",")]
    except ValueError:
        raise InputError(f"--listen must be IP addresses, separated by commas (got {listen!r})") from None
    addr = addrs[0]
    if not 1 <= port <= 65535:
        raise InputError(f"--port must be 1-65535 (got {port})")
    out = out.resolve()
    v.path(str(out), "OUT")  # named.conf quotes it: a quote or newline would end the string
    key = out / "tsig.key"
    z = zones(dc)
    zone_files = {zone: out / "zones" / f"{zone.rstrip('.')}.zone" for zone in (z.infra, z.tenant)}
    # a link at any name we write (or at OUT/zones) refuses the whole command before any write
    for path in (key, out / "named.conf"):
        preflight(path)
    out.mkdir(parents=True, exist_ok=True)
    make_dirs(out / "zones", under=out)
    for path in zone_files.values():
        preflight(path)
    if not key.exists():
        p = subprocess.run(["tsig-keygen", "-a", "hmac-sha256", KEY_NAME], capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            raise CtmError(f"tsig-keygen failed: {p.stderr.strip()} (apt-get install bind9)")
        write_atomic(key, p.stdout.encode(), 0o600, under=out)
    ns = absolute(f"ns.{z.infra}")
    conf = [f'include "{key}";',
            "options {",
            f'    directory "{out}";',
            f"    listen-on port {port} {{ {' '.join(a + ';' for a in addrs)} }};",
            "    listen-on-v6 { none; };",
            f'    pid-file "{out / "named.pid"}";',
            f'    session-keyfile "{out / "session.key"}";',
            # Recursion for the DC's own networks only: a CT's stub resolver (glibc)
            # does not chase CNAMEs, so the server must follow smtp.<tenant> ->
            # relay-101.rack-101.<infra> across the two zones for it.
            "    recursion yes;",
            f"    allow-recursion {{ 127.0.0.0/8; {dc.network.supernet}; }};",
            f"    allow-query {{ 127.0.0.0/8; {dc.network.supernet}; }};",
            "    notify no;",
            "    dnssec-validation no;",
            "};"]
    for zone in (z.infra, z.tenant):
        bare = zone.rstrip(".")
        conf += [f'zone "{bare}" {{',
                 "    type primary;",
                 f'    file "zones/{bare}.zone";',
                 f"    update-policy {{ grant {KEY_NAME} zonesub ANY; }};",
                 f"    allow-transfer {{ key {KEY_NAME}; }};",
                 "};"]
        zf = zone_files[zone]
        if not zf.exists():  # BIND owns it (and its journal) once running: written once
            write_atomic(zf, (f"$TTL {dc.ttl}\n"
                              f"@ IN SOA {ns} hostmaster.{zone} 1 3600 600 604800 {dc.ttl}\n"
                              f"@ IN NS {ns}\n"
                              + (f"ns IN A {addr}\n" if zone == z.infra else "")).encode(), 0o644, under=out)
    write_atomic(out / "named.conf", ("\n".join(conf) + "\n").encode(), 0o644)
    return {"named.conf": out / "named.conf", "key": key}
