"""The manager's side: when is a silent HN dead, so its CTs may start elsewhere?

An HN is dead when
  - the manager has held quorum itself, without a break, for `dead_after`, and
  - no voter it hears has heard that HN for `dead_after` (or a fence command
    confirmed the HN is off after the last sign of life).
`dead_after` must exceed `fence_after` + `watchdog_timeout`: by then the HN has
fenced itself (stopped its CTs), or its watchdog has reset it.
Without quorum nothing is declared dead and nothing is re-placed. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .quorum import Membership


@dataclass(frozen=True)
class FailoverView:
    quorum: bool
    dead: frozenset[str]
    news: tuple[str, ...] = ()  # log lines: quorum lost/regained, HN dead, HN back


@dataclass
class Failover:
    membership: Membership
    dead_after: float
    quorum_since: float | None = None
    confirmed: dict[str, float] = field(default_factory=dict)  # HN -> when a fence command confirmed it off
    asked: dict[str, float] = field(default_factory=dict)  # HN -> when its fence command was started
    dead: frozenset[str] = frozenset()

    def confirm_off(self, hn: str, now: float) -> None:
        self.confirmed[hn] = now

    def to_fence(self, now: float, hns: Iterable[str], after: float) -> list[str]:
        """HNs whose fence command (if one is configured) should run now: silent for
        `after` while the manager has quorum, not dead yet, not asked since they were
        last heard. A minority-side manager never powers anything off."""
        if self.quorum_since is None:
            return []
        m = self.membership
        due = []
        for hn in sorted(hns):
            last = m.evidence(hn)
            if hn not in self.dead and now - last >= after and self.asked.get(hn, -1.0) < last:
                self.asked[hn] = now
                due.append(hn)
        return due

    def step(self, now: float, hns: Iterable[str]) -> FailoverView:
        m = self.membership
        news: list[str] = []
        has = m.quorum(now)
        if has and self.quorum_since is None:
            self.quorum_since = now
            news.append(f"quorum: {m.describe(now)}")
        elif not has and self.quorum_since is not None:
            self.quorum_since = None
            news.append(f"NO QUORUM: {m.describe(now)}; nothing is done until it is back")
        dead: set[str] = set()
        if self.quorum_since is not None:
            steady = now - self.quorum_since >= self.dead_after
            for hn in hns:
                last = m.evidence(hn)
                fenced = self.confirmed.get(hn, -1.0) > last
                if fenced or (steady and now - last >= self.dead_after):
                    dead.add(hn)
        else:
            dead = set()  # without quorum an HN is never declared dead; unknown HNs are left alone
        for hn in sorted(dead - self.dead):
            how = "a fence command confirmed it off" if self.confirmed.get(hn, -1.0) > m.evidence(hn) else \
                f"nobody heard it for {now - m.evidence(hn):.1f}s"
            news.append(f"{hn} is DEAD ({how}): its CTs will be started elsewhere")
        for hn in sorted(self.dead - dead):
            news.append(f"{hn} is back" if has else f"{hn} is no longer treated as dead (no quorum)")
        self.dead = frozenset(dead)
        return FailoverView(has, self.dead, tuple(news))
