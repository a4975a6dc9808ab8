"""The simulator's clock and network: deterministic, seeded, no real time.

Events run in (time, order of scheduling) order. The network delivers each
datagram from one node to another after a delay; per directed link it can be
cut, and globally it can lose, duplicate and delay (which reorders) datagrams.
SSH is modelled as a link check at both ends of a command: TCP retransmits, so
loss does not matter to it, a cut does.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

STORE = "store"  # the store's node name (ctmanager/store/link.py is how managers reach it)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._order = 0

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        self._order += 1
        heapq.heappush(self._queue, (when if when > self.now else self.now, self._order, fn, args))

    def after(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.at(self.now + delay, fn, *args)

    def run_until(self, end: float) -> None:
        q, pop = self._queue, heapq.heappop
        while q and q[0][0] <= end:
            when, _, fn, args = pop(q)
            self.now = when
            fn(*args)
        self.now = max(self.now, end)


@dataclass
class Weather:
    """What the network does to datagrams now."""

    loss: float = 0.0  # probability a datagram is lost
    duplicate: float = 0.0  # probability it arrives twice
    delay: float = 0.002  # s, base
    jitter: float = 0.0  # s, uniform extra delay: datagrams overtake each other


@dataclass
class Network:
    clock: Clock
    rng: random.Random
    weather: Weather = field(default_factory=Weather)
    cut: set[tuple[str, str]] = field(default_factory=set)  # directed links that deliver nothing
    delivered: int = 0

    def up(self, a: str, b: str) -> bool:
        return (a, b) not in self.cut

    def send(self, src: str, dst: str, deliver: Callable[[Any], None], message: Any) -> None:
        """`deliver(message)` at `dst` later, unless lost or the link is cut."""
        if (src, dst) in self.cut:
            return
        w = self.weather
        copies = 1
        if w.loss and self.rng.random() < w.loss:
            copies = 0
        elif w.duplicate and self.rng.random() < w.duplicate:
            copies = 2
        for _ in range(copies):
            delay = w.delay + (self.rng.random() * w.jitter if w.jitter else 0.0)
            self.clock.after(delay, self._arrive, src, dst, deliver, message)

    def send_all(self, src: str, hearers: Sequence[tuple[str, Callable[[Any], None]]], message: Any) -> None:
        """`send` to each (dst, deliver) but `src`, in order: the same random draws,
        one loop (every report goes to every voter: this is the simulator's busiest path)."""
        cut, w, rnd, at, arrive = self.cut, self.weather, self.rng.random, self.clock.at, self._arrive
        loss, dup, jitter, base = w.loss, w.duplicate, w.jitter, w.delay
        now = self.clock.now
        together: list[tuple[str, Callable[[Any], None]]] = []  # without jitter: all arrive at once
        for dst, deliver in hearers:
            if dst == src or (src, dst) in cut:
                continue
            copies = 1
            if loss and rnd() < loss:
                continue
            if dup and rnd() < dup:
                copies = 2
            for _ in range(copies):
                if jitter:
                    at(now + (base + rnd() * jitter), arrive, src, dst, deliver, message)
                else:
                    together.append((dst, deliver))
        if together:
            # One event for datagrams due at the same instant, scheduled one after the
            # other: nothing can run between them, so they arrive in the same order.
            at(now + base, self._arrive_all, src, together, message)

    def _arrive(self, src: str, dst: str, deliver: Callable[[Any], None], message: Any) -> None:
        if (src, dst) in self.cut:
            return  # the link was cut while the datagram was on its way
        self.delivered += 1
        deliver(message)

    def _arrive_all(self, src: str, hearers: list[tuple[str, Callable[[Any], None]]], message: Any) -> None:
        for dst, deliver in hearers:
            self._arrive(src, dst, deliver, message)

    def partition(self, groups: list[set[str]], everyone: set[str]) -> None:
        """Only nodes in the same group hear each other; nodes in no group are alone."""
        side = {n: i for i, g in enumerate(groups) for n in g}
        for i, n in enumerate(sorted(everyone - side.keys())):
            side[n] = -1 - i
        self.cut = {(a, b) for a in everyone for b in everyone if a != b and side[a] != side[b]}

    def isolate(self, node: str, everyone: set[str], inbound: bool = True, outbound: bool = True) -> None:
        for other in everyone - {node}:
            if outbound:
                self.cut.add((node, other))
            if inbound:
                self.cut.add((other, node))

    def heal(self, node: str | None = None) -> None:
        self.cut = set() if node is None else {(a, b) for a, b in self.cut if node not in (a, b)}


class Inbox:
    """A simulated node's transport: datagrams arrive in `inbox` (Report objects:
    verifying MACs is the real transport's job, freshness the shared Receiver's),
    and go out through `broadcast(name, report)` over the simulated network."""

    def __init__(self, name: str, broadcast: Callable[[str, Any], None]) -> None:
        self.name, self.broadcast = name, broadcast
        self.inbox: list[Any] = []

    def receive(self, receiver: Any, now: float) -> list[Any]:
        got = self.inbox
        if not got:
            return got
        self.inbox = []
        accept = receiver.accept
        return [r for r in got if accept(r, r.hn, now) is not None]

    def send(self, report: Any, to: Any) -> None:
        self.broadcast(self.name, report)

    def wait(self, timeout: float, also: Sequence[int] = ()) -> None:  # the simulator steps the loop itself
        pass
