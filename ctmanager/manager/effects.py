"""The manager's storage port: a tenant move's effects (reconcile/moving.py
Effect: pulls, seals, unseals, removals) run on the storage nodes in the
background, one batch per step, and each batch's Outcome comes back to the loop
(as an action's Result does). `StorageEffects` runs them with ctstorage over SSH
(executor/storage.py); the simulator has its own storage nodes behind the same
two methods.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from ..errors import CtmError
from ..reconcile.moving import Effect, EffectKind, Outcome

log = logging.getLogger(__name__)
SPACE_MARGIN = 1.05  # the destination must have this much more free space than the tenant's /data
MIN_PULL_TIMEOUT = 600.0
MAX_PARALLEL = 8  # effects of one batch at once (a tenant of many CTs: one SSH session each)

Done = Callable[[Outcome], None]


class Storage(Protocol):
    def submit(self, effects: Sequence[Effect], bwlimit: int, done: Done) -> None:
        """Run one step's effects in the background; `done(outcome)` once, when all ended."""

    def cancel(self, effects: Sequence[Effect]) -> None:
        """Stop the running pulls among `effects` (an abort, or this manager no longer leads)."""

    def learn(self, addresses: dict[str, str]) -> None:
        """The storage nodes' addresses (racks installed since are learnt as they come)."""


class StorageEffects:
    """The real port: ctstorage on the storage nodes (executor.storage.StorageNodes)."""

    def __init__(self, nodes: Any) -> None:
        self.nodes = nodes
        # (source node, CTID) -> its /data's path there, from an earlier pass: the final
        # pull (the tenant down, every second counted) goes without asking again
        self._paths: dict[tuple[str, int], str] = {}

    def learn(self, addresses: dict[str, str]) -> None:
        self.nodes.learn(addresses)

    def submit(self, effects: Sequence[Effect], bwlimit: int, done: Done) -> None:
        threading.Thread(target=lambda: done(self._run(list(effects), bwlimit)), name="move-effects",
                         daemon=True).start()

    def cancel(self, effects: Sequence[Effect]) -> None:
        pulls = [e for e in effects if e.kind == EffectKind.PULL]

        def run() -> None:  # in the background: the loop never waits on SSH
            for e in pulls:
                try:
                    self.nodes.cancel(e.node, e.ctid)
                except CtmError as exc:
                    log.warning("cancelling the pull of CT %d on %s: %s", e.ctid, e.node, exc)
        if pulls:
            threading.Thread(target=run, name="move-cancel", daemon=True).start()

    def _run(self, effects: list[Effect], bwlimit: int) -> Outcome:
        """The batch in its order, kind by kind (seals before the final pulls: the
        seal is a guard of its own, so it lands before the copy is taken); the
        effects of one kind at once (different CTs or nodes). The outcome is the
        first failure, a stale token first of all; a kind that failed stops the
        batch."""
        from ..executor.storage import StaleToken

        started = time.monotonic()
        try:
            if any(e.check_space for e in effects):
                self._check_space(effects)
        except CtmError as exc:
            return Outcome(False, str(exc))
        done: list[Any] = []
        kinds = list(dict.fromkeys(e.kind for e in effects))
        with ThreadPoolExecutor(max_workers=min(len(effects), MAX_PARALLEL) or 1,
                                thread_name_prefix="move-effect") as pool:
            for kind in kinds:
                got = list(pool.map(lambda e: self._one(e, bwlimit), [e for e in effects if e.kind == kind]))
                done += got
                if any(isinstance(r, (CtmError, str)) for r in got):
                    break
        stale = [r for r in done if isinstance(r, StaleToken)]
        if stale:
            return Outcome(False, str(stale[0]), stale=True)
        failed = [r for r in done if isinstance(r, (CtmError, str))]
        if failed:
            return Outcome(False, str(failed[0]))
        pulls = [r for r in done if isinstance(r, tuple)]
        return Outcome(True, delta=sum(p[0] for p in pulls), took=time.monotonic() - started,
                       sizes=tuple(p[1] for p in pulls))

    def _one(self, e: Effect, bwlimit: int) -> tuple[int, tuple[int, int, int]] | CtmError | str | None:
        """One effect: a pull's (bytes brought, (CTID, bytes, files)), None, or what went wrong."""
        try:
            if e.kind == EffectKind.PULL:
                path, size = self._paths.get((e.source, e.ctid)), 0
                if path is None:
                    src = self.nodes.info(e.source, e.ctid)
                    if not src.exists:
                        return f"{e.source} has no /data of CT {e.ctid} ({src.path})"
                    path, size = src.path, src.bytes
                timeout = max(MIN_PULL_TIMEOUT, size / max(bwlimit, 1 << 20) * 3)
                got = self.nodes.pull(e.node, e.ctid, e.source, path, bwlimit, timeout, e.token)
                self._paths[e.source, e.ctid] = path
                return got.bytes, (e.ctid, got.total_bytes, got.files)
            if e.kind == EffectKind.SEAL:
                self.nodes.seal(e.node, e.ctid, e.token)
            elif e.kind == EffectKind.UNSEAL:
                self.nodes.unseal(e.node, e.ctid, e.token)
            else:
                self.nodes.remove(e.node, e.ctid)
                self._paths.pop((e.node, e.ctid), None)
        except CtmError as exc:  # StorageFailed, StaleToken, SshError: said in one line
            return exc
        return None

    def _check_space(self, effects: list[Effect]) -> None:
        from ..executor.storage import StorageFailed

        pulls = [e for e in effects if e.kind == EffectKind.PULL]
        need = sum(self.nodes.info(e.source, e.ctid).bytes for e in pulls)
        for node in sorted({e.node for e in pulls}):
            free = self.nodes.info(node, pulls[0].ctid).free
            if free < need * SPACE_MARGIN:
                raise StorageFailed(f"target storage full: {node} has {free / (1 << 20):.1f} MiB free, the "
                                    f"tenant's /data needs {need / (1 << 20):.1f} MiB")
