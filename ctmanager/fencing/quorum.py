"""Who hears whom: the quorum both the agents and the manager decide on.

Voters are the rack's HNs and the manager. Every voter sends a report (the
manager a heartbeat) every `report_interval` to all the others, saying which
voters it heard and how long ago (`hears`). Pure: times are arguments.

Quorum needs *mutual* contact. A voter counts another as connected only if it
heard that voter within `window` AND that voter's message said it heard us back
within the same window. One-way loss (our reports are dropped, theirs arrive)
therefore costs us quorum, as it should: the others cannot see us, so the
manager may soon declare us dead and start our CTs elsewhere.

Even splits: with an even number of voters (3 HNs + the manager), a side with
exactly half of them has quorum if the manager is on it. Two halves cannot both
hold the manager, so at most one side keeps running; without this rule a 2|2
split would fence every HN of a 3-HN rack.

Evidence: every message is also evidence that its sender is alive, and its
`hears` list is evidence about the voters the sender heard. The manager only
declares an HN dead when nobody it hears has heard that HN for `dead_after`;
two majorities always share a voter, so an HN that still has quorum is seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

MANAGER = "manager"  # the manager's voter name (HN names are rack hostnames like hn-101-1)


def majority(voters: int) -> int:
    return voters // 2 + 1


def is_quorum(side: set[str] | frozenset[str], voters: frozenset[str]) -> bool:
    """A strict majority, or exactly half with the manager on that side."""
    n = len(side & voters)
    return 2 * n > len(voters) or (2 * n == len(voters) and MANAGER in side)


@dataclass
class Membership:
    me: str
    voters: frozenset[str]  # every voter, `me` included
    window: float  # fence_after: how recent a mutual contact must be to count
    started: float  # no evidence about anyone predates this
    heard_at: dict[str, float] = field(default_factory=dict)  # voter -> when we last heard it
    mutual_at: dict[str, float] = field(default_factory=dict)  # voter -> newest time both sides heard each other
    seen_at: dict[str, float] = field(default_factory=dict)  # voter -> newest evidence it was alive

    def __post_init__(self) -> None:
        if self.me not in self.voters:
            raise ValueError(f"{self.me} is not one of the voters")

    @property
    def needed(self) -> int:
        return majority(len(self.voters))

    def hear(self, sender: str, sent_at: float, received: float, hears: Mapping[str, float]) -> None:
        """Take one verified message. Times in the sender's clock are trusted only
        where that is the cautious choice: contact ages err early, evidence late."""
        me, voters = self.me, self.voters
        if sender == me or sender not in voters:
            return
        heard = received if received < sent_at else sent_at
        heard_at = self.heard_at
        if heard > heard_at.get(sender, -1.0):
            heard_at[sender] = heard
        seen = self.seen_at
        get = seen.get
        if received > get(sender, -1.0):
            seen[sender] = received
        age = hears.get(me)
        if age is not None:
            # Not before we started: the voter may have heard the one before us under
            # our name (a manager's earlier run, or the leader before this one).
            mutual = sent_at - age
            if heard <= mutual:
                mutual = heard  # min(heard, sent_at - age)
            if mutual > self.mutual_at.get(sender, -1.0) and mutual >= self.started:
                self.mutual_at[sender] = mutual
        for voter, age in hears.items():  # runs for every datagram: kept lean
            at = received - age
            if at > get(voter, -1.0) and voter != me and voter in voters:
                seen[voter] = at

    def hears(self, now: float) -> dict[str, float]:
        """What our next message says: each voter heard within 2 windows, and how long ago.
        Twice the window: the manager needs to learn of contact the quorum still counts."""
        horizon = 2 * self.window
        return {v: round(now - at, 3) if now > at else 0.0
                for v, at in sorted(self.heard_at.items()) if now - at <= horizon}

    def connected(self, now: float) -> set[str]:
        return {v for v, at in self.mutual_at.items() if now - at <= self.window}

    def quorum(self, now: float) -> bool:
        return self._quorum_within(self.mutual_at, now)  # is_quorum(connected(now) | {me})

    def hears_quorum(self, now: float) -> bool:
        """One way only: the voters heard within the window would, with us, make a
        quorum. What a standby manager, which sends nothing, can know."""
        return self._quorum_within(self.heard_at, now)

    def _quorum_within(self, times: dict[str, float], now: float) -> bool:
        """is_quorum({voters in `times` within the window} | {me}) without building
        the set: every agent round and every manager step asks."""
        window, voters, me = self.window, self.voters, self.me
        n, manager = 1 if me in voters else 0, me == MANAGER
        for v, at in times.items():
            if now - at <= window and v != me:
                n += v in voters
                manager = manager or v == MANAGER
        return 2 * n > len(voters) or (2 * n == len(voters) and manager)

    def describe(self, now: float) -> str:
        side = sorted(self.connected(now))
        return (f"in contact with {len(side) + 1} of {len(self.voters)} voters "
                f"({', '.join(side) or 'none'} besides {self.me}); {self.needed} needed, "
                f"or {len(self.voters) // 2} with the manager" if len(self.voters) % 2 == 0 else
                f"in contact with {len(side) + 1} of {len(self.voters)} voters "
                f"({', '.join(side) or 'none'} besides {self.me}); {self.needed} needed")

    def evidence(self, voter: str) -> float:
        """When `voter` was last known alive (by us or a voter we heard); at least `started`."""
        return max(self.seen_at.get(voter, self.started), self.started)
