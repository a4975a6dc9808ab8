"""The simulated rack's DC and its store: a real store (SQLite, in memory, one
per schedule) initialised through the real Inventory, so the manager under
simulation reads and writes the same rows as `ctmanager run`.

Building a store takes a few milliseconds; a process running many schedules
builds each rack shape once and copies its image."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from ..dc import template
from ..dc.model import DcTemplate, NodeSpec, Resources
from ..operations.inventory import Inventory, set_dc
from ..store.db import Store

SLOT = 101
G = 1 << 30
CT_RESOURCES = Resources(1 * G, 0, 10 * G, 1, 1000, 100)
STORAGE_POSITION = 9

TEMPLATE = """
[dc]
name = "sim"
infra_zone = "sim.internal"
tenant_zone = "sim.example"
environments = ["prod"]
first_ctid = 1000

[network]
supernet = "10.0.0.0/8"
bridge = "br0"
gateway = "0.1"
nodes = "1.1-1.254"
services = "2.1-3.254"
cts = "4.1-255.254"

[[slots]]
first = 101
count = 2

[skus.compute]
role = "compute"
hostname_prefix = "hn"
memory = "64G"
disk = "1T"
cpus = 16

[skus.storage]
role = "storage"
hostname_prefix = "storage"
memory = "64G"
disk = "96T"
cpus = 16

[zone_services]
resolvers = ["10.0.0.53"]

[paths]
prototype = "/vz/proto/debian-12"
software = "/vz/sw"
data = "/vz/data"
config = "/vz/ctconf"
ve_root = "/vz/root"
ve_private = "/vz/private"
export_root = "/export"

[defaults]
memory = "1G"
swap = "0"
disk = "10G"
cpus = 1
cpuunits = 1000
"""


@lru_cache(maxsize=1)
def dc() -> DcTemplate:
    return template.loads(TEMPLATE.encode(), "sim-dc.toml", Path("."))


@lru_cache(maxsize=64)
def _image(hns: int, cts: int) -> bytes:
    d = dc()
    store = Store.memory()
    nodes = tuple(NodeSpec(i, "compute", f"SIMHN{i:03d}", f"52:54:00:00:01:{i:02x}") for i in range(1, hns + 1))
    nodes += (NodeSpec(STORAGE_POSITION, "storage", "SIMST001", "52:54:00:00:02:01"),)
    with store.transaction():
        set_dc(store, d, TEMPLATE, "sim-dc.toml")
        inv = Inventory(store, d, now=lambda: 0.0)
        inv.install_rack(SLOT, nodes, "sim")
        for i in range(cts):
            inv.add_ct(f"ct{i}", SLOT, resources=CT_RESOURCES)
    return store.image()


def rack_store(hns: int, cts: int, clock: Callable[[], float] | None = None) -> Store:
    """A fresh store holding one rack of `hns` HNs (hn-101-1 ...) and `cts` CTs
    (1000 ...); `clock`: the store's (the simulated true time)."""
    return Store.memory(_image(hns, cts), clock)


@lru_cache(maxsize=16)
def _dc_image(hns: int, cts: int, tenants: int) -> bytes:
    d = dc()
    store = Store.memory()
    with store.transaction():
        set_dc(store, d, TEMPLATE, "sim-dc.toml")
        inv = Inventory(store, d, now=lambda: 0.0)
        for slot, serial in ((SLOT, 1), (SLOT + 1, 2)):
            nodes = tuple(NodeSpec(i, "compute", f"SIM{serial}HN{i:03d}", f"52:54:00:0{serial}:01:{i:02x}")
                          for i in range(1, hns + 1))
            nodes += (NodeSpec(STORAGE_POSITION, "storage", f"SIM{serial}ST001", f"52:54:00:0{serial}:02:01"),)
            inv.install_rack(slot, nodes, "sim")
            for i in range(cts):
                inv.add_ct(f"ct{slot}-{i}", slot, resources=CT_RESOURCES)
        for t in range(tenants):
            inv.add_tenant(f"t{t + 1}", SLOT, (), CT_RESOURCES)
    return store.image()


def dc_store(hns: int, cts: int, tenants: int, clock: Callable[[], float] | None = None) -> Store:
    """A fresh store of a DC of two racks (101, 102), each of `hns` HNs, a storage
    node and `cts` CTs of its own; tenants t1, t2 ... live in rack-101."""
    return Store.memory(_dc_image(hns, cts, tenants), clock)
