"""ctmanager's own metrics (graphyte): the agent's HN and per-CT figures, the
manager's reconcile loop. Sent by graphyte's background thread from a bounded
queue: `send()` only enqueues, so a slow or dead carbon never slows a loop (when
the queue is full, metrics are dropped and counted, not waited for)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

from ..validate import hostport

log = logging.getLogger(__name__)
QUEUE = 10_000
INTERVAL = 1.0  # s between background flushes
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class MetricsSender:
    """A graphite sender, or a no-op when `address` is empty (not configured)."""

    def __init__(self, address: str, prefix: str) -> None:
        if not _NAME.fullmatch(prefix):
            raise ValueError(f"metric prefix {prefix!r}: letters, digits, '_', '-', '.' only")
        self.prefix = prefix
        self.sender = None
        if address:
            import graphyte

            host, port = hostport(address, "graphite", names=True)
            # graphyte's own logger reports each failed flush; quiet it to one line a flush at most
            logging.getLogger("graphyte").setLevel(logging.CRITICAL)
            self.sender = graphyte.Sender(host, int(port), prefix=prefix, timeout=2, interval=INTERVAL,
                                          queue_size=QUEUE)

    def send(self, name: str, value: float, timestamp: float | None = None) -> None:
        if self.sender is not None:
            self.sender.send(name, value, timestamp)

    def send_many(self, values: Mapping[str, float], timestamp: float | None = None) -> None:
        for name, value in values.items():
            self.send(name, value, timestamp)


def cgroup_stats(root: Path, ctids: list[int]) -> dict[int, dict[str, float]]:
    """Per-CT CPU seconds and memory bytes from the cgroup v1 hierarchies LXC uses
    (`<controller>/lxc.payload.<ctid>`). CTs without readable figures are left out."""
    out: dict[int, dict[str, float]] = {}
    for ctid in ctids:
        stats: dict[str, float] = {}
        cpu = _read_int(root / "cpuacct" / f"lxc.payload.{ctid}" / "cpuacct.usage")
        if cpu is not None:
            stats["cpu_seconds"] = cpu / 1e9
        mem = _read_int(root / "memory" / f"lxc.payload.{ctid}" / "memory.usage_in_bytes")
        if mem is not None:
            stats["memory_bytes"] = float(mem)
        if stats:
            out[ctid] = stats
    return out


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
