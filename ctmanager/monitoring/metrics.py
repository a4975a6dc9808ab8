"""ctmanager's own metrics (graphyte): the agent's HN and per-CT figures, the
manager's reconcile loop. Sent by graphyte's background thread from a bounded
queue: `send()` only enqueues, so a slow or dead carbon never slows a loop (when
the queue is full, metrics are dropped and counted, not waited for).

Per-CT figures come from the CT's cgroup in either layout LXC uses: cgroup v1 (one
hierarchy per controller: `cpuacct/lxc.payload.<ctid>/cpuacct.usage`, `memory/...`)
or unified v2 (Debian 12's default: `lxc.payload.<ctid>/cpu.stat`, `memory.current`).
Both give the same names and units (`METRICS`). Facts: `cgroup_version`,
`payloads`/`populated` (which directory is the CT's), `read_files`; the rest is pure
(`parse_int`, `parse_keyed`, `candidates`, `figures`). A figure that cannot be read
is left out of what is sent and logged by `Gaps`: once when it goes, once when back."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ..validate import hostport, is_digits

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


# cpuacct.stat counts in these ticks (USER_HZ: 100 on Linux, whatever HZ the kernel runs at)
USER_HZ = os.sysconf("SC_CLK_TCK")
PAYLOAD = "lxc.payload."  # LXC 4+ names a CT's cgroup so, at each hierarchy's root
# metric -> (file, the key of its line, or "" for a one-number file, units in a second or a byte),
# on each layout: the same names and units on both (CPU in seconds, memory in bytes).
METRICS: dict[int, dict[str, tuple[str, str, float]]] = {
    1: {"cpu_seconds": ("cpuacct.usage", "", 1e9),  # ns
        "cpu_user_seconds": ("cpuacct.stat", "user", USER_HZ),
        "cpu_system_seconds": ("cpuacct.stat", "system", USER_HZ),
        "memory_bytes": ("memory.usage_in_bytes", "", 1)},
    2: {"cpu_seconds": ("cpu.stat", "usage_usec", 1e6),
        "cpu_user_seconds": ("cpu.stat", "user_usec", 1e6),
        "cpu_system_seconds": ("cpu.stat", "system_usec", 1e6),
        "memory_bytes": ("memory.current", "", 1)},  # like v1's usage_in_bytes, page cache included
}


def cgroup_version(root: Path) -> int:
    """2 when the unified hierarchy is mounted at the root (cgroup.controllers
    there), else 1 (the v1 controllers, maybe beside an empty unified mount).
    The agent's limits (drivers/lxc.py) go by the same test."""
    return 2 if (root / "cgroup.controllers").is_file() else 1


def hierarchy(version: int, file: str) -> str:
    """The directory under the root whose cgroups hold `file`: v1 mounts each controller
    apart, under the file's prefix (`cpuacct`, `memory`); v2 has one tree."""
    return "" if version == 2 else file.split(".", 1)[0]


# ---- pure --------------------------------------------------------------------
def parse_int(text: str) -> int:
    """A one-number file (cpuacct.usage, memory.usage_in_bytes, memory.current)."""
    return int(text.split()[0])


def parse_keyed(text: str) -> dict[str, int]:
    """`key value` lines (cpu.stat, cpuacct.stat, memory.stat) -> {key: value};
    other lines are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and is_digits(parts[1]):
            out[parts[0]] = int(parts[1])
    return out


def candidates(names: Iterable[str], ctid: int) -> list[str]:
    """The cgroups that may be CT `ctid`'s, highest suffix first. LXC takes
    `lxc.payload.<ctid>-N` (the first N free) when `lxc.payload.<ctid>` is left over
    from an earlier run (a lab's netns HNs share one tree), so the plain name may be stale."""
    base = f"{PAYLOAD}{ctid}"
    found = [(0, n) for n in names if n == base]
    found += [(int(n[len(base) + 1:]), n) for n in names
              if n.startswith(base + "-") and is_digits(n[len(base) + 1:])]
    return [n for _, n in sorted(found, reverse=True)]


def choose(names: list[str], populated: Callable[[str], bool]) -> str | None:
    """The one candidate, or the first that has processes (the others are left over)."""
    if len(names) <= 1:
        return names[0] if names else None
    return next((n for n in names if populated(n)), None)


def figures(version: int, texts: Mapping[str, str], unread: Mapping[str, str]
            ) -> tuple[dict[str, float], dict[str, str]]:
    """(values, missing): each metric of `version` from the files' `texts`, or why it
    is missing (`unread`: file -> why it could not be read)."""
    values: dict[str, float] = {}
    missing: dict[str, str] = {}
    for metric, (file, key, unit) in METRICS[version].items():
        text = texts.get(file)
        if text is None:
            missing[metric] = unread.get(file, f"{file} not read")
            continue
        try:
            values[metric] = (parse_keyed(text)[key] if key else parse_int(text)) / unit
        except KeyError:
            missing[metric] = f"{file} has no {key!r} line"
        except (ValueError, IndexError):
            missing[metric] = f"{file} is not a number: {text[:40]!r}"
    return values, missing


# ---- facts -------------------------------------------------------------------
def payloads(directory: Path) -> list[str]:
    """The LXC CT cgroups in one hierarchy (none when it is not mounted)."""
    try:
        return [n for n in os.listdir(directory) if n.startswith(PAYLOAD)]
    except OSError:
        return []


def populated(cgroup: Path, version: int) -> bool:
    """Whether a cgroup has processes: v2's `populated` counts its children too;
    v1 has only its own cgroup.procs (LXC runs a CT's processes right there)."""
    try:
        if version == 2:
            return parse_keyed((cgroup / "cgroup.events").read_text()).get("populated") == 1
        return bool((cgroup / "cgroup.procs").read_text().strip())
    except OSError:
        return False


def locate(directory: Path, names: list[str], ctid: int, version: int) -> Path | None:
    """CT `ctid`'s cgroup among `names` (`payloads(directory)`), if any."""
    name = choose(candidates(names, ctid), lambda n: populated(directory / n, version))
    return None if name is None else directory / name


def read_files(paths: Mapping[str, Path]) -> tuple[dict[str, str], dict[str, str]]:
    """(texts, unread): each file's contents, or why it could not be read."""
    texts: dict[str, str] = {}
    unread: dict[str, str] = {}
    for file, path in paths.items():
        try:
            texts[file] = path.read_text()
        except OSError as exc:
            unread[file] = f"{path}: {exc.strerror or exc}"
    return texts, unread


class Gaps:
    """The figures each running CT lacked at the last pass. One left out of what is
    sent would otherwise vanish unseen from graphite: log it once when it goes (with
    why) and once when it is back, not every pass."""

    def __init__(self) -> None:
        self.missing: dict[int, frozenset[str]] = {}

    def note(self, ctid: int, version: int, missing: Mapping[str, str]) -> None:
        was, now = self.missing.get(ctid, frozenset()), frozenset(missing)
        if gone := sorted(now - was):
            by_why: dict[str, list[str]] = {}
            for m in gone:
                by_why.setdefault(missing[m], []).append(m)
            log.warning("CT %d: not sending %s: cgroup v%d unreadable (%s)", ctid, ", ".join(gone), version,
                        "; ".join(f"{', '.join(ms)}: {why}" for why, ms in by_why.items()))
        if back := sorted(was - now):
            log.info("CT %d: sending %s again", ctid, ", ".join(back))
        if now:
            self.missing[ctid] = now
        else:
            self.missing.pop(ctid, None)

    def keep(self, ctids: Iterable[int]) -> None:
        """Forget CTs no longer running: one started again is reported afresh."""
        for ctid in self.missing.keys() - set(ctids):
            del self.missing[ctid]


GAPS = Gaps()  # the agent's, across passes


def cgroup_stats(root: Path, ctids: list[int], gaps: Gaps = GAPS) -> dict[int, dict[str, float]]:
    """Per-CT CPU seconds and memory bytes (`METRICS`) from the cgroups LXC made
    under `root`, v1 or v2. CTs without any readable figure are left out; what is
    missing is logged by `gaps`."""
    version = cgroup_version(root)
    files = {file for file, _, _ in METRICS[version].values()}
    trees = {hierarchy(version, f) for f in files}
    listed = {t: payloads(root / t) for t in trees}  # one listing a hierarchy a pass, not one a CT
    out: dict[int, dict[str, float]] = {}
    for ctid in ctids:
        where = {t: d for t in trees if (d := locate(root / t, listed[t], ctid, version)) is not None}
        paths = {f: where[hierarchy(version, f)] / f for f in files if hierarchy(version, f) in where}
        texts, unread = read_files(paths)
        for f in files - paths.keys():
            unread[f] = f"no {PAYLOAD}{ctid} cgroup in use under {root / hierarchy(version, f)}"
        stats, missing = figures(version, texts, unread)
        gaps.note(ctid, version, missing)
        if stats:
            out[ctid] = stats
    gaps.keep(ctids)
    return out
