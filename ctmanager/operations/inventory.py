"""The configuration edits by name: what the CLI, the simulator and the tests
call. Each method runs one operation (check, then execute) inside the caller's
`store.transaction()`, so a refused request changes nothing.

    with store.transaction():
        Inventory(store, dc).add_tenant("acme", 101, ["jira"], dc.defaults)

Initialising a store from a DC template (`init`, `prepare_init`, `apply_init`,
`set_dc`) is here too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from ..dc.model import Ct, DcTemplate, NodeSpec, Resources
from ..store import queries
from ..store.db import Store
from .base import Context, run
from .cts import AddCt, PlaceCt, ResetCt, RmCt, SetCt
from .racks import InitPlan, InstallRack, RackInstalled, SetDrained, apply_init, init, prepare_init, set_dc
from .tenants import AddTenant, RmRoute, RmTenant, SetRealm, SetRoute

__all__ = ["InitPlan", "Inventory", "RackInstalled", "apply_init", "init", "prepare_init", "set_dc"]


class Inventory:
    """Operations on configured state. Call inside `store.transaction()`."""

    def __init__(self, store: Store, dc: DcTemplate, now: Callable[[], float] = time.time) -> None:
        self.store = store
        self.dc = dc
        self.now = now
        self.ctx = Context(store, dc, now)

    # ---- racks and HNs -------------------------------------------------------
    def install_rack(self, slot: int, nodes: tuple[NodeSpec, ...], source: str) -> RackInstalled:
        return run(self.ctx, InstallRack(slot, tuple(nodes), source))

    def set_drained(self, hn: str, drained: bool) -> None:
        run(self.ctx, SetDrained(hn, drained))

    # ---- CTs -----------------------------------------------------------------
    def add_ct(
        self,
        hostname: str,
        rack: int,
        *,
        resources: Resources,
        tenant: str | None = None,
        service: str | None = None,
        env: str | None = None,
        admst: str = "UP",
        apps: Iterable[str] = (),
        ctid: int | None = None,
    ) -> Ct:
        return run(self.ctx, AddCt(hostname, rack, resources, tenant, service, env, admst, tuple(apps), ctid))

    def set_ct(
        self,
        ref: str,
        *,
        resources: Resources | None = None,
        admst: str | None = None,
        apps: Iterable[str] | None = None,
        env: str | None = None,
    ) -> Ct:
        return run(self.ctx, SetCt(ref, resources, admst, None if apps is None else tuple(apps), env))

    def reset_ct(self, ref: str) -> tuple[Ct, tuple[int, float] | None]:
        """Clear a CT's crash loop. Returns the CT and what was cleared (crashes, since), if any."""
        return run(self.ctx, ResetCt(ref))

    def rm_ct(self, ref: str, *, as_tenant: bool = False, purge: bool = False) -> Ct:
        return run(self.ctx, RmCt(ref, as_tenant, purge))

    def move_ct(self, ref: str, to: str) -> tuple[Ct, str | None]:
        """Place a CT on another HN of its rack. Returns the CT and where it was placed before."""
        return run(self.ctx, PlaceCt(ref, to))

    # ---- tenants and routes --------------------------------------------------
    def add_tenant(self, name: str, rack: int, apps: Iterable[str], resources: Resources, realm: str = "") -> Ct:
        return run(self.ctx, AddTenant(name, rack, tuple(apps), resources, realm))

    def rm_tenant(self, name: str, *, purge: bool = False) -> list[Ct]:
        return run(self.ctx, RmTenant(name, purge))

    def set_realm(self, tenant: str, realm: str) -> str:
        """Pin `tenant` to `realm` ('' = unpin). Returns the realm it had."""
        return run(self.ctx, SetRealm(tenant, realm))

    def set_route(self, tenant: str, service: str, target: str, *, foreign: bool = False) -> str | None:
        """Point tenant's routing name `service` at a CT or pool. Returns the old target."""
        return run(self.ctx, SetRoute(tenant, service, target, foreign))

    def rm_route(self, tenant: str, service: str) -> None:
        run(self.ctx, RmRoute(tenant, service))

    # ---- reads ---------------------------------------------------------------
    def pools(self) -> dict[str, list[str]]:
        """Pool name (<service>-<slot>) -> member CT hostnames, for pooled rack services."""
        return queries.pools(self.store, self.dc)
