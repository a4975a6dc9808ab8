"""The manager daemon's configuration: when to look at the store's change signal, and
the reload of what ops configured (CTs, placements, HNs) into the decision core. A
mixin of `Manager` (manager/daemon.py), which holds the state these methods use.

A CLI edit bumps the store's change counter in its own transaction (PostgreSQL also
NOTIFYs); the daemon's own writes never do, so a reload is never missed nor
mistaken for one. The loop looks at the counter:
  - when the store's watch says it moved (PostgreSQL: its NOTIFY woke the loop;
    SQLite: the file's counter, looked at every watch.POLL s);
  - every CONFIG_CHECK_EVERY s anyway (a watch that lost its connection);
  - at every full plan, and after a failed step (the token is then unknown).
A reload takes one consistent snapshot of the store: a `ct rm` cannot land between
the reads. Store trouble while watching counts as "moved" once (so the reload says
what is wrong) and is then retried with a backoff up to 5 s, not at every step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from ..store import loop as persist
from ..store import queries
from ..store.watch import POLL as WATCH_POLL
from .core import Core

if TYPE_CHECKING:
    from ..dc.model import DcTemplate
    from ..store.db import Store
    from ..store.watch import Watch
    from ..wire.reports import Receiver
    from .config import ManagerConfig

CONFIG_CHECK_EVERY = 0.5  # s: a CLI edit is taken in at most this late (and at every full plan)
WATCH_BACKOFF_MAX = 5.0  # s between two looks at a watch whose store is in trouble


class Reloading:
    # What `Manager` provides (manager/daemon.py).
    store: Store
    dc: DcTemplate
    config: ManagerConfig
    core: Core | None
    dns: Any
    receiver: Receiver
    agents: list[tuple[str, int]]
    hn_ips: dict[str, str]
    next_moves: float  # Workflows'

    def _store_step(self, what: str, fn: Callable[[], Any], now: float) -> Any:
        raise NotImplementedError  # Manager's

    def _init_reloading(self, watch: Watch | None) -> None:
        self._config_token: int | None = None
        self.watch = watch
        self._watch_seen: tuple[int, int, int] | None = None
        self._watch_backoff = self._watch_retry_at = 0.0
        self.next_config_check = 0.0

    def _take_config(self, now: float, full: bool) -> bool:
        """Step 3: reload the configuration if it changed, when it is time to look.
        Returns whether every CT is to be planned (`full`, or it was reloaded)."""
        if full or now >= self.next_config_check or self._config_token is None or self._watch_moved(now):
            self.next_config_check = now + CONFIG_CHECK_EVERY
            reloaded = self._store_step("reload", lambda: self._reload_if_changed(now), now)
            if reloaded:
                self.next_moves = now  # a move begun, a hold, an abort: the workflows look at once
            return bool(reloaded) or full
        return full

    def _watch_moved(self, now: float) -> bool:
        """The store's change signal moved (cheap: PostgreSQL reads the counter only
        when notified). Store trouble counts as moved once, so the reload reports
        it; then the watch is tried again with backoff (to 5 s), not every step."""
        if self.watch is None or now < self._watch_retry_at:
            return False
        try:
            token = self.watch.token()
        except StoreError:
            first = self._watch_backoff == 0.0
            self._watch_backoff = min(max(self._watch_backoff * 2, WATCH_POLL), WATCH_BACKOFF_MAX)
            self._watch_retry_at = now + self._watch_backoff
            return first
        self._watch_backoff, self._watch_retry_at = 0.0, 0.0
        moved = token != self._watch_seen
        self._watch_seen = token
        return moved

    def _reload_if_changed(self, now: float, warm: Any = None) -> bool:
        """`warm`: a new Core starts from this Observed (a standby's) rather than the store's."""
        token = self.store.config_version()
        if token == self._config_token and self.core is not None:
            return False
        slot = self.config.slot
        with self.store.snapshot():  # one consistent view: a `ct rm` cannot land between the reads
            token = self.store.config_version()
            configured = persist.configured(self.store, self.dc, slot)
            placements = persist.placements(self.store, now, slot)
            nodes = [n for n in queries.nodes(self.store, rack=slot) if n.role == "compute"]
            last_seen = (warm or persist.observed(self.store, slot)) if self.core is None else None
        self._config_token = token
        if self.dns is not None:
            self.dns.poke()  # the configuration changed: records may have too (the worker finds out cheaply)
        if self.core is None:
            self.core = Core(configured, placements, self.config.settings, self.config.timers, now, last_seen)
            for hn, report in (last_seen.reports if last_seen else {}).items():
                self.receiver.latest.setdefault(hn, report)  # a restart accepts no capture older than these
        else:
            self.core.reconfigure(configured, placements)
        self.agents = [(n.ip, self.config.agent_port) for n in nodes]
        self.hn_ips = {n.hostname: n.ip for n in nodes}
        return True
