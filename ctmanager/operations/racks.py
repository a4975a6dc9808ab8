"""Operations on the DC and its racks: make an empty store the store of a DC
(from its template, with the racks and tenants the template lists), install a
rack into a slot (its nodes, and its rack services' CTs), drain an HN.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..dc import ipam, manifest, names, template
from ..dc.model import Ct, DcTemplate, NodeSpec, rack_name
from ..errors import ConflictError, InputError
from ..store import edits, queries
from ..store.db import Store
from . import rules
from .base import Context, Operation, run
from .cts import AddCt
from .tenants import AddTenant


@dataclass(frozen=True)
class InitPlan:
    path: Path
    dc: DcTemplate
    manifests: tuple[tuple[str, int, tuple[NodeSpec, ...]], ...]  # (source, slot, nodes)


def prepare_init(template_path: Path) -> InitPlan:
    """Read and validate the template and every manifest it lists; writes nothing."""
    dc = template.load(template_path)
    manifests = tuple((e.manifest, e.slot, manifest.load(e.manifest, dc)) for e in dc.racks)
    return InitPlan(template_path, dc, manifests)


def init(store: Store, template_path: Path) -> DcTemplate:
    return apply_init(store, prepare_init(template_path))


def apply_init(store: Store, plan: InitPlan) -> DcTemplate:
    """Initialise an empty store (the caller's transaction): the DC, the racks and
    tenants the template lists."""
    dc, template_path = plan.dc, plan.path
    set_dc(store, dc, template_path.read_text(encoding="utf-8"), str(template_path.resolve()))
    ctx = Context(store, dc)
    for source, slot, nodes in plan.manifests:
        run(ctx, InstallRack(slot, nodes, source))
    for t in dc.tenants:
        run(ctx, AddTenant(t.name, t.rack, tuple(t.apps), t.resources, t.realm))
    return dc


@dataclass(frozen=True)
class SetDc(Operation[None, None]):
    """Make an empty store the store of DC `dc` (parsed from `text`, read from `file`)."""

    text: str
    file: str

    def check(self, ctx: Context) -> None:
        if queries.initialised(ctx.store):
            raise ConflictError(f"store {ctx.store.where} is already initialised "
                                f"(DC {queries.dc_template(ctx.store).name})")

    def execute(self, ctx: Context, found: None) -> None:
        edits.set_template(ctx.store, self.text, self.file, ctx.dc.first_ctid)
        ctx.store.event("init", ctx.dc.name, self.file)


def set_dc(store: Store, dc: DcTemplate, text: str, file: str) -> None:
    run(Context(store, dc), SetDc(text, file))


@dataclass(frozen=True)
class RackInstalled:
    slot: int
    name: str
    network: str
    nodes: list[tuple[str, str, str]]  # hostname, role, ip
    service_cts: list[Ct]


@dataclass(frozen=True)
class NewNode:
    hostname: str
    role: str
    ip: str
    spec: NodeSpec


@dataclass(frozen=True)
class NewRack:
    network: str
    nodes: tuple[NewNode, ...]
    service_cts: tuple[tuple[str, str], ...]  # (hostname, rack service) of each service CT to add


@dataclass(frozen=True)
class InstallRack(Operation[NewRack, RackInstalled]):
    """Install a rack (the servers of its delivery manifest, `nodes`) into slot
    `slot`: its /16, its nodes at their positions' addresses, and the CTs of
    every rack service."""

    slot: int
    nodes: tuple[NodeSpec, ...]
    source: str

    def check(self, ctx: Context) -> NewRack:
        dc, store, slot = ctx.dc, ctx.store, self.slot
        if not dc.has_slot(slot):
            ranges = ", ".join(f"{r.first}–{r.last}" for r in dc.slots)
            raise InputError(f"slot {slot} is not a slot of DC {dc.name} (slots {ranges})")
        if queries.rack_installed(store, slot):
            raise ConflictError(f"slot {slot} is occupied: {rack_name(slot)} is already installed")
        for n in self.nodes:
            clash = edits.node_clash(store, n.serial, n.mac)
            if clash:
                raise ConflictError(f"node at position {n.position} (serial {n.serial}, mac {n.mac}) is already "
                                    f"installed as {clash}")
        net = template.rack_network(dc.network.supernet, slot)
        nodes = tuple(NewNode(names.node_name(dc.skus[n.sku].hostname_prefix, slot, n.position), dc.skus[n.sku].role,
                              ipam.node_address(net, dc.network.nodes, n.position), n) for n in self.nodes)
        services = tuple((names.service_ct_name(svc.name, slot, i), svc.name) for svc in dc.rack_services
                         for i in range(1, svc.count + 1))
        pools = [names.pool_name(svc.name, slot) for svc in dc.rack_services if svc.pool]
        # every name the rack brings is free (a CT may hold one from before names were
        # reserved, dc/names.py): two machines never share a hostname
        for name in [n.hostname for n in nodes] + [h for h, _ in services] + pools:
            try:
                rules.hostname_free(ctx, name)
            except ConflictError as exc:
                raise ConflictError(f"cannot install {rack_name(slot)}: it brings {name}, and {exc.message}; "
                                    "rename or remove that first") from None
        return NewRack(str(net), nodes, services)

    def execute(self, ctx: Context, found: NewRack) -> RackInstalled:
        slot = self.slot
        edits.insert_rack(ctx.store, slot, rack_name(slot), found.network, self.source, ctx.now())
        for n in found.nodes:
            edits.insert_node(ctx.store, n.hostname, slot, n.spec.position, n.spec.sku, n.role, n.spec.serial,
                              n.spec.mac, n.ip)
        resources = {svc.name: svc.resources for svc in ctx.dc.rack_services}
        service_cts = [run(ctx, AddCt(hostname, slot, resources[service], service=service))
                       for hostname, service in found.service_cts]
        ctx.store.event("rack.install", rack_name(slot), f"{len(self.nodes)} nodes from {self.source}")
        return RackInstalled(slot, rack_name(slot), found.network, [(n.hostname, n.role, n.ip) for n in found.nodes],
                             service_cts)


@dataclass(frozen=True)
class SetDrained(Operation[str, None]):
    """Drain an HN (the reconcile loop moves its CTs away) or undrain it."""

    hn: str
    drained: bool

    def check(self, ctx: Context) -> str:
        return queries.compute_node(ctx.store, self.hn).hostname

    def execute(self, ctx: Context, found: str) -> None:
        edits.set_drained(ctx.store, found, self.drained)
        ctx.store.event("hn.drain" if self.drained else "hn.undrain", found)
