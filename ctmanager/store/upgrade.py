"""`ctmanager store version` and `ctmanager store migrate [--dry-run]`: the only
way a store's schema changes (store/versions.py says why and what every other
command does with a store of another version).

A migration runs one transaction per step: each step lands whole with its version
and the store's new compatibility floor, so an interrupted migration leaves the
store at a version some ctmanager knows, and running `store migrate` again goes on
from there. Between steps the write lock is free: on SQLite, where that lock is the
only one, a leader's lease renewals get through between the steps of a long
migration instead of waiting for all of them.

A step that is not backward compatible with the code running on the store now
(its `compatible_with` above the store's current version) would break the managers
running on it: migrate refuses while any manager of the store is running (checked
in within the last seconds), naming them. Stop them all first; the CTs keep running.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import StoreError
from . import lease
from .backends import open_store
from .db import Locator, Store
from .schema import MIGRATIONS, STEPS, VERSION
from .versions import Schema, apply, read, refusal

LEASES_FROM = 13  # the schema version that has the managers' check-ins


@dataclass(frozen=True)
class Planned:
    """One step of a migration."""

    version: int  # the version it takes the store to
    what: str
    compatible_with: int  # the oldest schema whose code works on the store after it

    def as_dict(self) -> dict[str, object]:
        return {"version": self.version, "what": self.what, "compatible_with": self.compatible_with,
                "backward_compatible": self.compatible_with < self.version}


@dataclass(frozen=True)
class Report:
    where: str
    backend: str
    before: Schema
    after: Schema
    steps: tuple[Planned, ...]  # to take (dry run) or taken
    dry_run: bool
    running: tuple[str, ...] = ()  # managers running on the store now (asked only when a step would break them)

    @property
    def floor_after(self) -> int:
        """The store's compatibility floor once migrated."""
        return max([self.before.floor or 0, *(s.compatible_with for s in self.steps)])

    @property
    def rolling(self) -> bool:
        """Code of the store's version before the migration keeps working on it
        after: its managers may run on through it (a rolling upgrade)."""
        return self.floor_after <= self.before.store

    def as_dict(self) -> dict[str, object]:
        return {"store": self.where, "backend": self.backend, "dry_run": self.dry_run,
                "before": self.before.as_dict(), "after": self.after.as_dict(),
                "steps": [s.as_dict() for s in self.steps], "compatible_from_after": self.floor_after,
                "rolling": self.rolling, "running_managers": list(self.running)}


def planned(current: int) -> list[Planned]:
    """The steps from schema `current` to this code's."""
    return [Planned(i + 1, STEPS[i].what, STEPS[i].compatible_with) for i in range(current, VERSION)]


def version(locator: Locator) -> tuple[str, str, Schema]:
    """(where, backend, schema) of the store at `locator`, whatever its version."""
    with open_store(locator, schema_check=False) as store:
        return store.where, store.backend, read(store)


def migrate(locator: Locator, *, dry_run: bool = False,
            progress: Callable[[str], None] = lambda _: None) -> Report:
    """Take the store to this code's schema version, step by step (nothing to do
    when it is there, or newer and usable). A refusal changes nothing."""
    with open_store(locator, schema_check=False) as store:
        before = read(store)
        if before.state == "incompatible":
            why = refusal(store.where, before)
            raise StoreError(why or f"{store.where}: store schema is newer than this ctmanager's")
        steps = tuple(planned(before.store))
        report = Report(store.where, store.backend, before, before, steps, dry_run)
        if not steps:
            return report
        if not dry_run and not may_write(store):
            raise StoreError(f"{store.where}: this user (or role) may only read the store, so it cannot be migrated: "
                             "run `ctmanager store migrate` as one who may write it (the store's owner)")
        running: tuple[str, ...] = ()
        if not report.rolling:
            running = running_managers(store, before.store)
            if running and not dry_run:
                raise StoreError(
                    f"{store.where}: migrating to schema {VERSION} is not backward compatible with the "
                    f"ctmanager of schema {before.store} that {len(running)} manager(s) run "
                    f"({', '.join(running[:4])}{', ...' if len(running) > 4 else ''}): stop every manager of "
                    "the store first (the CTs keep running), then migrate")
        if dry_run:
            return Report(store.where, store.backend, before, before, steps, True, running)
        for step in steps:
            started = time.monotonic()
            progress(f"schema {step.version - 1} -> {step.version}: {step.what} ...")
            with store.transaction(config=False):
                now = store.version
                if now >= step.version:  # another `store migrate` took this step meanwhile
                    continue
                if now != step.version - 1:
                    raise StoreError(f"{store.where}: store schema version moved to {now} during the migration; "
                                     "run store migrate again")
                apply(store, step.version, MIGRATIONS[step.version - 1])
            progress(f"schema {step.version}: done ({time.monotonic() - started:.1f}s)")
        return Report(store.where, store.backend, before, read(store), steps, False)


def may_write(store: Store) -> bool:
    """May this user change the store: an SQLite file opened for writing, a
    PostgreSQL role that may update it (its DDL needs the owner: a step refused
    for lack of that is one line and rolled back)."""
    if store.read_only:
        return False
    if store.backend == "postgresql":
        return bool(store.one("SELECT has_table_privilege('meta', 'UPDATE')")[0])
    return True


def running_managers(store: Store, schema: int) -> tuple[str, ...]:
    """The managers running on the store now (leaders and standbys that checked
    in within the last seconds): 'NAME (rack-N, ROLE)'."""
    if schema < LEASES_FROM:
        return ()
    return tuple(f"{v.name} (rack-{v.rack}, {v.role})" for v in lease.view(store) if v.role in ("leader", "standby"))
