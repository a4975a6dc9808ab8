"""A lab node's network: a namespace whose eth0 is a veth on the rack bridge, with
the node's rack address and the rack's gateway as its default route (a namespaced
manager, a storage node; an HN adds a bridge of its own, lab/rack.py). Safe to
run again: what exists is kept."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from ..dc.network import RackNet
from . import layout

Sh = Callable[..., subprocess.CompletedProcess[str]]


def attach(lab: layout.Lab, slot: int, net: RackNet, ns: str, link: str, ip: str, sh: Sh) -> None:
    """Namespace `ns` at `ip` on rack `slot`'s bridge, through host-side veth `link`."""
    if ns not in sh("ip", "netns", "list", check=False).stdout.split():
        sh("ip", "netns", "add", ns)
    if sh("ip", "link", "show", link, check=False).returncode != 0:
        sh("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
    sh("ip", "link", "set", link, "master", lab.bridge(slot), "up")
    for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "link", "set", "eth0", "up"],
                ["ip", "addr", "replace", f"{ip}/{net.prefixlen}", "dev", "eth0"],
                ["ip", "route", "replace", "default", "via", net.gateway]):
        sh(*cmd, ns=ns)
