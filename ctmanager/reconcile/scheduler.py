"""Choose an HN for a CT: filter, then score, then a deterministic tie-break.

Filter: the HN's state is known (and it is not dead or fenced), it is not drained (by ops or by its agent), the
CT was not rejected there recently, it has the memory and disk the CT asks for
(reported free space minus what is already placed there but not yet reported,
minus a reserve), and no other CT of the same rack service is placed there
(anti-affinity: losing one HN never takes out a whole service).
Score: free memory and disk left after placing, as fractions, minus CPU load.
Ties: by host name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import Ct
from .state import Configured, Observed, Placements, Settings


@dataclass
class Scheduler:
    configured: Configured
    observed: Observed
    placements: Placements
    now: float
    settings: Settings
    # Built on first use: a plan with nothing to place never pays for these.
    _pending: dict[str, tuple[int, int]] | None = field(default=None, repr=False)
    _services: dict[str, set[str]] | None = field(default=None, repr=False)

    def choose(self, ct: Ct) -> tuple[str | None, str]:
        """(HN, why) — HN is None when no HN fits, and `why` says what ruled them out."""
        pending, services = self._tables()
        ruled: dict[str, int] = {}
        best: tuple[tuple[float, str], str] | None = None
        for hn in self.configured.hns.values():
            why = self._unfit(ct, hn.hostname, hn.drained, pending, services)
            if why:
                ruled[why] = ruled.get(why, 0) + 1
                continue
            report = self.observed.reports[hn.hostname]
            m = report.metrics
            mem_after = m.mem_free - pending[hn.hostname][0] - ct.resources.memory
            disk_after = m.disk_free - pending[hn.hostname][1] - ct.resources.disk
            score = round(mem_after / max(m.mem_total, 1) + disk_after / max(m.disk_total, 1) - m.cpu_load, 6)
            key = (-score, hn.hostname)
            if best is None or key < best[0]:
                best = (key, hn.hostname)
        if best is None:
            detail = ", ".join(f"{n} {why}" for why, n in sorted(ruled.items())) or "no HNs configured"
            return None, f"no HN fits ({detail})"
        chosen = best[1]
        self._reserve(ct, chosen)
        return chosen, f"scheduled on {chosen}"

    def _unfit(self, ct: Ct, hn: str, drained: bool, pending: dict[str, tuple[int, int]],
               services: dict[str, set[str]]) -> str | None:
        if hn in self.observed.dead:
            return "dead"
        if not self.observed.known(hn, self.now, self.settings):
            return "state unknown"
        report = self.observed.reports[hn]
        if drained or report.drained:
            return "drained"
        if report.fenced:
            return "fenced (no quorum)"
        if self.placements.rejected.get((ct.ctid, hn), -1.0) > self.now:
            return "rejected it recently"
        mem, disk = pending.get(hn, (0, 0))
        if report.metrics.mem_free - mem - self.settings.reserve_memory < ct.resources.memory:
            return "short of memory"
        if report.metrics.disk_free - disk < ct.resources.disk:
            return "short of disk"
        if ct.service and ct.service in services.get(hn, ()):
            return f"already run a {ct.service} CT"
        return None

    def _tables(self) -> tuple[dict[str, tuple[int, int]], dict[str, set[str]]]:
        if self._pending is None or self._services is None:
            pending: dict[str, tuple[int, int]] = {hn: (0, 0) for hn in self.configured.hns}
            services: dict[str, set[str]] = {}
            for ctid, hn in self.placements.where.items():
                ct = self.configured.cts.get(ctid)
                if ct is None:
                    continue
                if ct.service:
                    services.setdefault(hn, set()).add(ct.service)
                if hn in pending and hn not in self.observed.where.get(ctid, {}):
                    mem, disk = pending[hn]  # placed, not reported yet: not in the HN's free figures
                    pending[hn] = (mem + ct.resources.memory, disk + ct.resources.disk)
            self._pending, self._services = pending, services
        return self._pending, self._services

    def _reserve(self, ct: Ct, hn: str) -> None:
        assert self._pending is not None and self._services is not None
        mem, disk = self._pending.get(hn, (0, 0))
        self._pending[hn] = (mem + ct.resources.memory, disk + ct.resources.disk)
        if ct.service:
            self._services.setdefault(hn, set()).add(ct.service)
