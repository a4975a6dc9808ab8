"""Choose an HN for a CT: filter, then score, then a deterministic tie-break.

Filter: the HN's state is known (and it is not dead or fenced), it is not drained (by ops or by its agent), the
CT was not rejected there recently, it has the memory and disk the CT asks for
(reported free space minus what is already placed there but not yet reported,
minus a reserve), and no other CT of the same rack service is placed there
(anti-affinity: losing one HN never takes out a whole service).

Score: free memory and disk left after placing, as fractions of the HN, minus
how far its CPU load (per CPU) is above `Settings.idle_load`. Below that an HN
is idle, and an idler one is not better: load averages are sampled at
different moments and would otherwise decide every placement by noise.

Choice: HNs scoring within `Settings.score_slack` of the best count as equal;
of those, the one with the fewest CTs wins (reported UP, plus placed but not yet
reported), then the host name. Room and count both include this plan's earlier
choices, so a burst (a dead HN's CTs, a new rack) spreads over the HNs instead
of piling onto the one that looked emptiest in its last report — the herd
effect of schedulers that trust lagging live figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..dc.model import Ct
from .state import Configured, KnownAt, Observed, Placements, Settings


@dataclass
class _Load:
    """What is on an HN beyond its last report, plus its CT count."""

    memory: int = 0  # placed, not reported yet: not in the HN's free figures
    disk: int = 0
    cts: int = 0  # reported UP + placed and not reported yet

    def add(self, ct: Ct) -> None:
        self.memory += ct.resources.memory
        self.disk += ct.resources.disk
        self.cts += 1


@dataclass
class Scheduler:
    configured: Configured
    observed: Observed
    placements: Placements
    now: float
    settings: Settings
    # Built on first use: a plan with nothing to place never pays for these.
    _load: dict[str, _Load] | None = field(default=None, repr=False)
    _services: dict[str, set[str]] | None = field(default=None, repr=False)
    known: KnownAt = field(init=False, repr=False)  # HN -> its state is known now

    def __post_init__(self) -> None:
        self.known = self.observed.known_at(self.now, self.settings)

    def choose(self, ct: Ct) -> tuple[str | None, str]:
        """(HN, why) — HN is None when no HN fits, and `why` says what ruled them out."""
        load, services = self._tables()
        ruled: dict[str, int] = {}
        scored: list[tuple[float, str]] = []
        for hn in self.configured.hns.values():
            why = self._unfit(ct, hn.hostname, hn.drained, load, services)
            if why:
                ruled[why] = ruled.get(why, 0) + 1
                continue
            m = self.observed.reports[hn.hostname].metrics
            extra = load[hn.hostname]
            mem_after = m.mem_free - extra.memory - ct.resources.memory
            disk_after = m.disk_free - extra.disk - ct.resources.disk
            busy = max(m.cpu_load - self.settings.idle_load, 0.0)
            scored.append((round(mem_after / max(m.mem_total, 1) + disk_after / max(m.disk_total, 1) - busy, 6),
                           hn.hostname))
        if not scored:
            detail = ", ".join(f"{n} {why}" for why, n in sorted(ruled.items())) or "no HNs configured"
            return None, f"no HN fits ({detail})"
        best = max(score for score, _ in scored)
        chosen = min((load[hn].cts, hn) for score, hn in scored if score >= best - self.settings.score_slack)[1]
        self._reserve(ct, chosen)
        return chosen, f"scheduled on {chosen}"

    def _unfit(self, ct: Ct, hn: str, drained: bool, load: dict[str, _Load],
               services: dict[str, set[str]]) -> str | None:
        if hn in self.observed.dead:
            return "dead"
        if not self.known[hn]:
            return "state unknown"
        report = self.observed.reports[hn]
        if drained or report.drained:
            return "drained"
        if report.fenced:
            return "fenced (no quorum)"
        if self.placements.rejected.get((ct.ctid, hn), -1.0) > self.now:
            return "rejected it recently"
        extra = load[hn]
        if report.metrics.mem_free - extra.memory - self.settings.reserve_memory < ct.resources.memory:
            return "short of memory"
        if report.metrics.disk_free - extra.disk < ct.resources.disk:
            return "short of disk"
        if ct.service and ct.service in services.get(hn, ()):
            return f"already run a {ct.service} CT"
        return None

    def _tables(self) -> tuple[dict[str, _Load], dict[str, set[str]]]:
        if self._load is None or self._services is None:
            load: dict[str, _Load] = {}
            for hn in self.configured.hns:
                report = self.observed.reports.get(hn)
                load[hn] = _Load(cts=report.metrics.ct_count if report is not None else 0)
            services: dict[str, set[str]] = {}
            for ctid, hn in self.placements.where.items():
                ct = self.configured.cts.get(ctid)
                if ct is None:
                    continue
                if ct.service:
                    services.setdefault(hn, set()).add(ct.service)
                # Agents subtract only UP CTs from their free figures; one placed but
                # not UP there yet (starting, or crashed and about to restart) will need its room.
                if hn in load and self.observed.where.get(ctid, {}).get(hn) != "UP":
                    load[hn].add(ct)
            self._load, self._services = load, services
        return self._load, self._services

    def _reserve(self, ct: Ct, hn: str) -> None:
        assert self._load is not None and self._services is not None
        self._load[hn].add(ct)
        if ct.service:
            self._services.setdefault(hn, set()).add(ct.service)
