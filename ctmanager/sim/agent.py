"""A simulated HN: its power, its runtime (which CTs run), its watchdog, and
the real agent daemon (agent/daemon.py `Agent`) and `ctagent apply`
(agent/apply.py) running on it with simulated ports.

Ports: the runtime is `SimRuntime` (a Driver: starts and stops take START_TIME
and STOP_TIME; a hung runtime never returns, which hangs whoever called it);
the node's shared state (specs, fence file) is kept in memory and survives an
agent restart and a reset, as files would; the watchdog is hardware: it resets
the node `watchdog_timeout` after the last pet, in true time.

Faults: the agent can be killed (no reports, no pets), the runtime can hang,
the node can be powered off or reset (every CT dies), and a reset node boots
again after `reboot_after`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ..agent import apply as applying
from ..agent.config import DEFAULT_PATHS, AgentConfig
from ..agent.daemon import Agent
from ..fencing.timers import FenceTimers
from ..monitoring.metrics import MetricsSender
from ..wire import spec as wirespec
from ..wire.reports import Receiver, Report
from .world import Inbox

if TYPE_CHECKING:
    from .ports import AgentRack

G = 1 << 30
STOP_TIME = 0.3  # s a CT takes to stop
START_TIME = 0.5  # s a CT takes to start
LOAD = 0.1  # the 1-minute load per CPU every simulated HN reports


class SimHang(BaseException):
    """A runtime command that never returns: not an error anybody could catch."""


class SimRuntime:
    """The Driver of a simulated HN."""

    name = "sim"

    def __init__(self, hn: SimAgent) -> None:
        self.hn = hn
        self.running: dict[int, float] = {}  # CTID -> since (the runtime's truth: UP)
        self.configs: set[int] = set()  # CTs with a config here (DOWN unless running)
        self.starting: set[int] = set()
        self.hung = False
        self.took = 0.0  # s the current command takes (the caller answers that much later)
        self.why = "fenced"  # who stops a CT: the daemon fences, `ctagent apply` stops or destroys

    def observe(self) -> dict[int, str]:
        return {c: "UP" if c in self.running else "DOWN" for c in self.configs | self.running.keys()}

    def create(self, spec: wirespec.Spec) -> bool:
        new = spec.ct.ctid not in self.configs
        self.configs.add(spec.ct.ctid)
        return new

    def set_limits(self, spec: wirespec.Spec) -> tuple[str, ...]:
        return ()

    def start(self, ctid: int) -> None:
        if self.hung:
            raise SimHang
        if ctid in self.running or ctid in self.starting:
            return
        self.starting.add(ctid)
        self.took += START_TIME
        hn, boots = self.hn, self.hn.boots
        if hn.rack.dc is not None:  # ctagent checked the seal just now: the runtime is told to start it
            hn.rack.dc.data.starting(hn.storage_of(ctid), ctid, hn.hn)

        def up() -> None:
            self.starting.discard(ctid)
            if hn.boots == boots and hn.powered:
                self.running[ctid] = hn.local()
                hn.rack.ct_up(hn.hn, ctid, hn.storage_of(ctid))
                hn.wake(0.0)  # the runtime's event stream (lxc-monitor)
        hn.rack.clock.after(START_TIME, up)

    def stop(self, ctid: int) -> None:
        if ctid not in self.running:
            return
        if self.hung:
            raise SimHang
        self.took += STOP_TIME
        hn, boots, why = self.hn, self.hn.boots, self.why

        def down() -> None:
            if hn.boots == boots and ctid in self.running:
                del self.running[ctid]
                hn.rack.ct_down(hn.hn, ctid, hn.storage_of(ctid))
                hn.rack.log(hn.hn, f"CT {ctid} stopped ({why})")
                hn.wake(0.0)
        hn.rack.clock.after(STOP_TIME, down)

    def destroy(self, ctid: int) -> None:
        self.stop(ctid)
        self.configs.discard(ctid)

    def watch_argv(self) -> list[str] | None:
        return None

    def exec_argv(self, ctid: int, argv: list[str]) -> list[str]:
        raise NotImplementedError("no exec in the simulator")


class MemoryNode:
    """The HN's shared state in memory: specs, the fence file, the drain flag."""

    def __init__(self, sealed: Callable[[str, int], bool] | None = None) -> None:
        self._sealed = sealed  # (storage node, CTID) -> whether its /data is sealed there
        self.running_epochs: dict[int, int] = {}  # CTID -> epoch of the action running on it
        self.raw: dict[int, tuple[wirespec.Spec, str, bytes]] = {}  # CTID -> (spec, its hash, the file)
        self._all: dict[int, wirespec.Spec] | None = None
        self._hashes: dict[int, str] | None = None
        self.fence: tuple[bool | None, float | None] = (None, None)
        self.epoch = 0  # the newest manager epoch seen (on disk: it outlives a reboot)

    @property
    def specs(self) -> MemoryNode:
        return self

    def get(self, ctid: int) -> wirespec.Spec | None:
        got = self.raw.get(ctid)
        return None if got is None else got[0]

    def put(self, ctid: int, raw: bytes) -> None:
        old = self.raw.get(ctid)
        if old is not None and old[2] == raw:
            return  # the same file again: like SpecStore, nothing changes
        self.raw[ctid] = (wirespec.parse(raw, ctid), wirespec.spec_hash(json.loads(raw)), raw)
        self._all = self._hashes = None

    def drop(self, ctid: int) -> None:
        if self.raw.pop(ctid, None) is not None:
            self._all = self._hashes = None

    def all(self) -> dict[int, wirespec.Spec]:
        if self._all is None:
            self._all = {c: s for c, (s, _, _) in self.raw.items()}
        return self._all

    def hashes(self) -> dict[int, str]:
        if self._hashes is None:
            self._hashes = {c: h for c, (_, h, _) in self.raw.items()}
        return self._hashes

    def fence_state(self) -> tuple[bool | None, float | None]:
        return self.fence

    def write_fence(self, fenced: bool, at: float) -> None:
        self.fence = (fenced, at)

    def drained(self) -> bool:
        return False

    @contextlib.contextmanager
    def lock(self, ctid: int) -> Iterator[None]:
        yield  # one simulated process at a time

    @contextlib.contextmanager
    def applying(self, ctid: int, epoch: int) -> Iterator[None]:
        self.running_epochs[ctid] = epoch  # held on by SimAgent.apply until its answer (the runtime's time)
        yield

    def oldest_applying(self) -> int | None:
        return min(self.running_epochs.values(), default=None)

    def sealed(self, marker: str) -> bool:
        """`<paths.data>/<storage>/<CTID>.sealed`, as the HN sees it through its mount."""
        if self._sealed is None:
            return False
        folder, _, name = marker.rpartition("/")
        return self._sealed(folder.rpartition("/")[2], int(name.split(".")[0]))

    def see_epoch(self, epoch: int) -> int:
        seen, self.epoch = self.epoch, max(self.epoch, epoch)
        return seen


class SimAgent:
    def __init__(self, rack: AgentRack, hn: str, voters: frozenset[str], timers: FenceTimers,
                 interval: float, reboot_after: float | None, offset: float = 0.0) -> None:
        self.rack, self.hn, self.timers = rack, hn, timers
        self.clock = rack.clock  # the rack's (read for every datagram heard)
        self.reboot_after = reboot_after
        self.config = AgentConfig(file="sim", rack=rack.slot, hn=hn, key=b"", runtime="sim", report_to=(),
                                  report_interval=interval, state_dir="/nonexistent", memory=64 * G, disk=1 << 40,
                                  reserve_memory=0, lxcpath="", paths=DEFAULT_PATHS, voters=voters, watchdog="sim",
                                  timers=timers, metrics_prefix=f"sim.{hn}")
        self.runtime = SimRuntime(self)
        self.node = MemoryNode(rack.dc.data.sealed if rack.dc is not None else None)
        self.alive = False  # the agent process runs (and is not stuck in a hung runtime)
        self.stuck = False
        self.powered = True
        self.boots = 0
        self.last_pet = 0.0
        self.offset = offset  # this node's clock minus true time (NTP keeps it small, not zero)
        self._next: float | None = None
        self.boot()

    @property
    def running(self) -> dict[int, float]:
        return self.runtime.running

    @property
    def hung_runtime(self) -> bool:
        return self.runtime.hung

    @hung_runtime.setter
    def hung_runtime(self, hung: bool) -> None:
        self.runtime.hung = hung
        if not hung:
            self.node.running_epochs.clear()  # the hung commands return at last
        if not hung and self.stuck:  # the stuck command returns at last
            self.stuck = False
            self.wake(0.0)

    def local(self) -> float:
        return self.clock.now + self.offset

    def storage_of(self, ctid: int) -> str:
        """The storage node of the /data this HN runs CT `ctid` on (its config's)."""
        got = self.node.raw.get(ctid)
        return got[0].ct.storage if got is not None else ""

    # ---- life cycle ------------------------------------------------------
    def boot(self) -> None:
        """Start the agent process (after a boot, or again after it was killed)."""
        self.boots += 1
        self.alive, self.powered, self.stuck = True, True, False
        self.transport = Inbox(self.hn, self.rack.broadcast)
        self.agent = Agent(self.config, self.runtime, self.local, transport=self.transport, watchdog=SimWatchdog(self),
                           node=self.node, events=SimEvents(self), metrics=MetricsSender("", self.config.metrics_prefix),
                           receiver=Receiver(b"", self.rack.slot, quiet=True), load=lambda: LOAD,
                           boot_id=f"{self.boots:08x}")
        self.agent.polling = False  # the runtime's events wake it (SimRuntime calls wake)
        self._next = None
        self.wake(0.0)

    def kill(self) -> None:
        self.alive = False  # like kill -9: no reports, and the watchdog is not petted any more

    def start_agent(self) -> None:
        if self.powered and not self.alive:
            self.boot()

    def reset(self, why: str) -> None:
        """Node reset: every CT dies at once, the agent with them."""
        self.rack.log(self.hn, f"RESET ({why}); {len(self.running)} CT(s) killed")
        for ctid in sorted(self.running):
            self.rack.ct_down(self.hn, ctid, self.storage_of(ctid))
        self.running.clear()
        self.runtime.starting.clear()
        self.node.running_epochs.clear()  # every process died with the node
        self.alive = self.powered = False
        self.boots += 1  # the old life's timers end
        if self.reboot_after is not None:
            boots = self.boots
            self.rack.clock.after(self.reboot_after, lambda: self._power_on(boots))

    def _power_on(self, boots: int) -> None:
        if self.boots == boots and not self.powered:
            self.rack.log(self.hn, "booted")
            self.boot()

    # ---- stepping the real loop ------------------------------------------
    def wake(self, delay: float) -> None:
        if not (self.alive and self.powered) or self.stuck:
            return
        when = self.rack.clock.now + max(delay, 0.0)
        if self._next is not None and self._next <= when:
            return
        self._next = when
        self.rack.clock.at(when, self._step, self.boots, when)

    def _step(self, boots: int, when: float) -> None:
        if boots != self.boots or when != self._next or not (self.alive and self.powered) or self.stuck:
            return
        self._next = None
        now = self.local()
        try:
            wake = self.agent.step(now)
        except SimHang:
            self.stuck = True  # the daemon waits on the runtime: no reports, no pets
            return
        self.wake(max(wake - now, 1e-6))  # never 0: float rounding of the skewed clock could spin

    def hear(self, report: Report) -> None:
        """A datagram wakes the real daemon, which takes it in (`listen`); the rest
        of that round finds nothing new (a runtime event wakes it by itself), so
        only that part runs here."""
        if self.alive and self.powered and not self.stuck:
            self.transport.inbox.append(report)
            self.agent.listen(self.local())

    # ---- `ctagent apply`, run by sshd (works while the daemon is hung) ----
    def apply(self, kind: str, ctid: int, stdin: bytes, purge: bool, reply: Callable[[str, str], None],
              epoch: int | None = None) -> None:
        if not self.powered:
            return reply("failed", "no route to host")
        rt = self.runtime
        rt.took, rt.why = 0.0, kind
        try:
            out = applying.apply(self.config, rt, kind, ctid, stdin, purge=purge, node=self.node, now=self.local(),
                                 epoch=epoch)
        except SimHang:
            return  # the command hangs: the manager's action timeout answers
        finally:
            rt.why = "fenced"
        if not rt.took:
            self.node.running_epochs.pop(ctid, None)
            return reply(out.result, out.message)
        boots = self.boots

        def answer() -> None:
            self.node.running_epochs.pop(ctid, None)  # the command returns now (its runtime call took this long)
            if self.boots == boots and self.powered:
                reply(out.result, out.message)
            else:
                reply("failed", "the node went down")
        self.rack.clock.after(rt.took, answer)


class SimWatchdog:
    """The hardware watchdog: true time, not the node's clock."""

    def __init__(self, owner: SimAgent) -> None:
        self.owner = owner

    def pet(self) -> bool:
        hn = self.owner
        now = hn.rack.clock.now
        hn.last_pet = now
        boots = hn.boots

        def check() -> None:
            if hn.last_pet == now and hn.boots == boots and hn.powered:
                hn.reset(f"watchdog: not petted for {hn.timers.watchdog_timeout:g}s")
        hn.rack.clock.at(now + hn.timers.watchdog_timeout, check)
        return True

    def disarm(self) -> None:
        pass

    def release(self) -> None:
        pass


class SimEvents:
    def __init__(self, owner: SimAgent) -> None:
        self.owner = owner

    def fence_news(self, text: str, fenced: bool) -> None:
        self.owner.rack.log(self.owner.hn, text.split(":")[0] if fenced else "quorum regained")

    def fence_stop(self, ctid: int, error: str) -> None:
        pass

    def state_changed(self, diff: str) -> None:
        pass

    def cannot_observe(self, error: str) -> None:
        pass
