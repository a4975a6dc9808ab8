"""The fencing timers, shared by the agent and manager configs, and checked
together: the manager may only start a silent HN's CTs elsewhere once that HN
has surely fenced itself or been reset by its watchdog."""

from __future__ import annotations

from dataclasses import dataclass

from ..dc.tomlread import Table


@dataclass(frozen=True)
class FenceTimers:
    fence_after: float = 5.0  # s without mutual contact with a majority: the agent stops its CTs
    watchdog_timeout: float = 10.0  # s without a pet: the node resets (its CTs die)
    dead_after: float = 16.0  # s nobody heard an HN (and the manager had quorum): its CTs start elsewhere

    def problem(self) -> str:
        """Why these timers are unsafe, or ''."""
        if self.dead_after <= self.fence_after + self.watchdog_timeout:
            return (f"dead_after ({self.dead_after:g}s) must exceed fence_after + watchdog_timeout "
                    f"({self.fence_after:g}s + {self.watchdog_timeout:g}s), or a CT could run on two HNs")
        return ""


def from_table(t: Table) -> FenceTimers:
    """The [fencing] timers of a manager or agent config, checked together."""
    d = FenceTimers()
    values = []
    for key, default in (("fence_after", d.fence_after), ("watchdog_timeout", d.watchdog_timeout),
                         ("dead_after", d.dead_after)):
        value = t.number(key, default)
        if not 0.1 <= float(value) <= 3600:
            raise t.error(key, f"must be between 0.1 and 3600 seconds (got {value!r})")
        values.append(float(value))
    timers = FenceTimers(*values)
    if timers.problem():
        raise t.error("dead_after", timers.problem())
    return timers
