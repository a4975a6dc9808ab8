"""The agent's fence: stop every CT when this HN has lost quorum, and pet the
watchdog only while that is safe. Pure: the daemon (and the simulator) call
`step()` with the time and what runs, and carry out what it returns.

- quorum lost (fewer than a majority of voters in mutual contact within
  `fence_after`) -> fenced: stop all CTs, admit none. The guard looks one
  round (`lookahead`) ahead: it fences in the last round before quorum would
  lapse, not the first round after, so neither the stop nor the last pet is
  late by up to a round (the manager's `dead_after` counts on that);
- while fenced and a CT still runs, the watchdog is not petted: if stopping
  hangs or fails, the watchdog resets the node `watchdog_timeout` later;
- quorum back -> unfenced; CTs are not started again here, that is the
  manager's decision (it may have placed them elsewhere meanwhile);
- after the agent starts it has heard nobody yet: it waits one `fence_after`
  before judging (the watchdog covers a restart that took longer).
"""

from __future__ import annotations

from dataclasses import dataclass

from .quorum import Membership


@dataclass(frozen=True)
class FenceStep:
    fenced: bool
    stop: tuple[int, ...]  # CTs to stop now
    pet: bool  # pet the watchdog this round
    news: str = ""  # one line for the log when the fence state changed


CALM = FenceStep(False, (), True)  # the usual round: nothing to stop, pet (immutable: one is enough)


@dataclass
class FenceGuard:
    membership: Membership
    started: float
    lookahead: float  # the time between two steps (the agent's report_interval)
    fenced: bool = False

    def step(self, now: float, running: set[int]) -> FenceStep:
        m = self.membership
        if now + self.lookahead - self.started < m.window or m.quorum(now + self.lookahead):
            news = ""
            if self.fenced:
                self.fenced = False
                news = f"quorum regained: {m.describe(now)}; admitting CTs again"
            return FenceStep(False, (), True, news) if news else CALM
        news = ""
        if not self.fenced:
            self.fenced = True
            news = f"FENCED: {m.describe(now + self.lookahead)}; stopping {len(running)} CT(s)"
        return FenceStep(True, tuple(sorted(running)), not running, news)
