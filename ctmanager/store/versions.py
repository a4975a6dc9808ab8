"""The store's schema version against this code's, checked at every open.

Schema upgrades are explicit (issue 36): no command but `ctmanager store migrate`
changes a store's schema, so a newer CLI on a laptop never upgrades the DC's store
under its running managers. Code of schema version V opening a store at version S:

- S == V: used.
- S < V: refused, in one line naming `ctmanager store migrate`.
- S > V: used only if the store's compatibility floor is at most V. The floor is
  the oldest schema whose code still works on the store (migrations.py: the
  largest `compatible_with` of the steps taken). It is recorded in `meta` by the
  code that makes or migrates a store, so older code reads it without knowing the
  newer migrations; a newer store without it is refused.

A new store (`init`, `store copy`'s destination) is made at this code's version,
its floor recorded. `store version` and `store migrate` open a store without the
check (schema_check=False) and use `read` and `apply`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import StoreError
from ..validate import is_digits
from .db import Store
from .schema import VERSION, floor, statements, upgrade_path

COMPAT_KEY = "schema_compatible"  # meta: the store's compatibility floor
# code of this schema and later reads a newer store's compatibility floor; older code refuses
# any newer store when it opens one (it migrated on open, issue 36)
FLOOR_AWARE = 18
MIGRATE_HINT = "run `ctmanager store migrate` (see --dry-run)"


@dataclass(frozen=True)
class Schema:
    """A store's schema as this code sees it."""

    store: int  # the store's schema version
    code: int  # this code's (schema.VERSION)
    floor: int | None  # the oldest schema whose code may use the store (None: newer, and not recorded)

    @property
    def state(self) -> str:
        """current | older (migrate it) | newer (backward compatible: usable) |
        incompatible (newer, and this code may not use it)."""
        if self.store == self.code:
            return "current"
        if self.store < self.code:
            return "older"
        return "newer" if self.floor is not None and self.floor <= self.code else "incompatible"

    @property
    def usable(self) -> bool:
        return self.state in ("current", "newer")

    def as_dict(self) -> dict[str, object]:
        return {"schema": self.store, "code": self.code, "compatible_from": self.floor, "state": self.state,
                "usable": self.usable, "migrate": self.store < self.code}


def read(store: Store) -> Schema:
    s = store.version
    recorded = store.get_meta(COMPAT_KEY) if s > 0 else None
    if recorded is not None and is_digits(recorded):
        at = int(recorded)
    elif s <= VERSION:  # made or migrated before floors were recorded: this code knows its steps
        at = floor(s)
    else:
        return Schema(s, VERSION, None)
    return Schema(s, VERSION, at)


def refusal(where: str, schema: Schema) -> str | None:
    """Why this code may not use the store (one line), or None."""
    if schema.state == "older":
        return (f"{where}: store schema version {schema.store} is older than this ctmanager's ({schema.code}): "
                f"{MIGRATE_HINT}")
    if schema.state == "incompatible":
        needs = "" if schema.floor is None else f" (it needs ctmanager of schema {schema.floor} or newer)"
        return (f"{where}: store schema version {schema.store} is newer than this ctmanager's ({schema.code}) "
                f"and not backward compatible with it{needs}: upgrade ctmanager")
    return None


def check(store: Store) -> None:
    if store.version == VERSION:  # the common case: one query at open
        return
    why = refusal(store.where, read(store))
    if why is not None:
        raise StoreError(why)


def apply(store: Store, after: int, script: str) -> None:
    """One step's script, the new version and its floor; inside the caller's
    transaction (all of it lands, or none)."""
    if store.backend == "postgresql":
        store.execute("SET LOCAL statement_timeout = 0")  # a step may rewrite a big table
    for statement in statements(script, store.backend):
        store.execute(statement)
    store.set_version(after)
    store.set_meta(COMPAT_KEY, str(floor(after)))


def create(store: Store) -> None:
    """Make a new (empty) store at this code's version, in one transaction."""
    with store.transaction(config=False):
        if store.version != 0:  # another process made it meanwhile
            return
        for after, script in upgrade_path(0):
            apply(store, after, script)
