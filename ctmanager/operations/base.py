"""The shape of every configuration edit: check, then act.

As in Ganeti's logical units (an opcode's parameters, CheckPrereq, then Exec),
an operation is a frozen dataclass of its parameters with two steps, run inside
the caller's one `store.transaction()` (the store's write lock, so nothing
changes between them):

- `check(ctx)` reads the store and the DC template, validates, and works out
  everything the edit will write (addresses, CTIDs, route targets, rows to
  clear), returned as a frozen dataclass. It refuses with one typed error of
  errors.py (InputError and its kinds: one line, exit 2) and writes nothing.
- `execute(ctx, found)` writes what `check` found, through the store's row
  functions. It decides nothing anew. An operation made of others (a tenant and
  its core CT, a rack and its service CTs) runs them from its execute, as their
  checks read the rows it wrote first: the transaction keeps the whole edit all
  or nothing.

`run(ctx, op)` is the two in order. The guards the edits of a tenant run first
are here too (an open move owns the tenant; a tenant pinned to a realm has
nothing outside it); the placement rules several operations share are in
rules.py.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..dc.model import DcTemplate, rack_name
from ..errors import ConflictError, InputError
from ..store import moves as moverows
from ..store.db import Store

Found = TypeVar("Found")
Result = TypeVar("Result")


@dataclass(frozen=True)
class Context:
    """What every operation runs against: the store (inside the caller's
    transaction), the DC template, and the clock its rows are stamped with."""

    store: Store
    dc: DcTemplate
    clock: Callable[[], float] = field(default=time.time)

    def now(self) -> float:
        return self.clock()


class Operation(abc.ABC, Generic[Found, Result]):
    """One check-then-act edit (subclasses: frozen dataclasses of its parameters)."""

    @abc.abstractmethod
    def check(self, ctx: Context) -> Found:
        """Read and validate; what `execute` is to write. Raises a typed one-line
        error (errors.InputError or a kind of it) and writes nothing."""

    @abc.abstractmethod
    def execute(self, ctx: Context, found: Found) -> Result:
        """Write what `check` found (the caller's transaction)."""


def run(ctx: Context, op: Operation[Found, Result]) -> Result:
    """Check `op`, then execute it: inside the caller's store transaction."""
    return op.execute(ctx, op.check(ctx))


# ---- guards: an open move owns its tenant -----------------------------------------
def not_moving(store: Store, tenant: str | None, *, online_ok: bool = False) -> None:
    """Refuse an edit of a tenant whose move is open (its CTs are the workflow's).
    `online_ok`: an edit of how its CTs run (ADMST, resources, a crash loop) is
    taken once the move is online with the source copy kept: they run at the
    destination as any CT does, and the copy left behind is only files."""
    if tenant is None:
        return
    m = moverows.open_of(store, tenant)
    if m is None or (online_ok and m.phase == "online"):
        return
    if m.phase == "online" and m.keep_source:
        raise ConflictError(f"tenant {tenant} was moved to {rack_name(m.dst)} with its source copy kept (move "
                            f"{m.id}); delete that copy first: ctmanager tenant move {tenant} --delete-source")
    raise ConflictError(f"tenant {tenant} is being moved to {rack_name(m.dst)} (move {m.id}, {m.phase}); "
                        f"wait for it or abort it: ctmanager tenant move {tenant} --abort")


def not_a_move_target(store: Store, hostname: str) -> None:
    """Refuse to remove a CT an open move will point a tenant's route at (or back at)."""
    for move_id, tenant, routes in moverows.open_routes(store):
        if any(hostname in pair for pair in routes.values()):
            raise ConflictError(f"CT {hostname} is a route target of tenant {tenant}'s open move {move_id}; "
                                f"wait for it or abort it: ctmanager tenant move {tenant} --abort")


# ---- guards: a pinned tenant stays in its realm ------------------------------------
def known_realm(dc: DcTemplate, realm: str) -> None:
    if realm and realm not in dc.realms:
        raise InputError(f"unknown realm {realm!r} (the DC template has: {', '.join(dc.realms) or 'none'})",
                         where="--realm")


def in_realm(dc: DcTemplate, tenant: str, realm: str, slot: int, what: str, *, to_be: bool = False,
             hint: str = "") -> None:
    """A tenant pinned to `realm` (`to_be`: about to be) may have nothing in a rack
    of another realm. `hint`: what to do about it."""
    if realm and dc.realm_of(slot) != realm:
        raise InputError(f"{what}: tenant {tenant} {'would be' if to_be else 'is'} pinned to realm {realm!r}, and "
                         f"{rack_name(slot)} is in {realm_text(dc, slot)}{f'; {hint}' if hint else ''}; "
                         "nothing was changed")


def realm_text(dc: DcTemplate, slot: int) -> str:
    return f"realm {dc.realm_of(slot)!r}" if dc.realm_of(slot) else "no realm"
