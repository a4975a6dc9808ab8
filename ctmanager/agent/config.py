"""The agent's configuration file (TOML, strict like the DC template).

    rack = 101
    hn = "hn-101-1"
    key_file = "/etc/ctagent/rack.key"      # the rack's HMAC key (hex), mode 0600
    runtime = "lxc"                          # lxc | openvz
    report_to = ["10.101.0.1:7070", "10.101.1.2:7071"]  # the manager and every peer agent
    report_interval = 1.0
    listen = "10.101.1.1:7071"               # where peers' reports and the manager's heartbeats arrive
    state_dir = "/var/lib/ctagent"           # specs of the CTs it runs, drain flag
    [capacity]                               # what admission and the reports count against
    memory = "512G"                          # default: MemTotal of /proc/meminfo
    disk = "4T"                              # default: size of the file system holding paths.data
    reserve_memory = "256M"                  # never promised to CTs
    [lxc]
    lxcpath = "/var/lib/ctagent/lxc"
    [paths]                                  # this HN's view of the storage (defaults: the DC template's)
    prototype = "/vz/proto/debian-12"
    ...
    [fencing]                                # see "When a node fails" in README.md
    voters = ["hn-101-1", "hn-101-2", "hn-101-3"]  # the rack's HNs (this one too); the manager always votes
    watchdog = "/dev/watchdog"               # petted every report_interval; "none" only for tests
    fence_after = 5.0
    watchdog_timeout = 10.0
    dead_after = 16.0                        # the manager's; checked here so both agree
    [metrics]                                # optional: the agent's own metrics (graphyte)
    graphite = "10.101.2.5:2003"             # the rack's carbon relay
    prefix = "ctmanager.rack-101.hn-101-1"   # the default

`capacity` is read by every `ctagent apply` (it is a fresh process), so lowering
it takes effect for admission at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import validate as v
from ..dc import tomlread
from ..dc.model import Paths
from ..errors import InputError
from ..fencing.timers import FenceTimers, from_table
from ..validate import hostport, metric_name
from ..wire.keys import Keyring

RUNTIMES = ("lxc", "openvz")
DEFAULT_PATHS = Paths(prototype="/vz/proto/debian-12", software="/vz/sw", data="/vz/data", config="/vz/ctconf",
                      ve_root="/vz/root", ve_private="/vz/private", export_root="/export")
PATH_KEYS = ("prototype", "software", "data", "config", "ve_root", "ve_private")


@dataclass(frozen=True)
class AgentConfig:
    file: str
    rack: int
    hn: str
    key: bytes | Keyring = field(repr=False)  # the rack key (a Keyring: during a rotation the next or previous too)
    runtime: str
    report_to: tuple[tuple[str, int], ...]
    report_interval: float
    state_dir: str
    memory: int
    disk: int
    reserve_memory: int
    lxcpath: str
    paths: Paths
    listen: tuple[str, int] = ("0.0.0.0", 7071)
    voters: frozenset[str] = frozenset()  # the rack's HNs; empty = this HN alone (then only the manager counts)
    watchdog: str = "/dev/watchdog"
    timers: FenceTimers = FenceTimers()
    graphite: str = ""  # HOST:PORT for the agent's own metrics; "" = none
    metrics_prefix: str = ""

    @property
    def fence_file(self) -> Path:
        """Written by the daemon each round: whether it is fenced. `apply` admits no
        CT when the HN is fenced or the daemon stopped writing it (nothing would fence)."""
        return Path(self.state_dir) / "fence.json"

    @property
    def drain_flag(self) -> Path:
        """Present = the agent refuses new CTs and says `drained` in its reports."""
        return Path(self.state_dir) / "drained"


def load(path: Path) -> AgentConfig:
    top = tomlread.load(path)
    file = str(path)
    rack = top.check("rack", v.slot, top.int("rack"))  # the one slot rule (validate.slot)
    hn = top.check("hn", v.label, top.str("hn"))
    key_file = top.check("key_file", v.path, top.str("key_file"))
    runtime = top.str("runtime", "lxc")
    if runtime not in RUNTIMES:
        raise top.error("runtime", f"must be one of {', '.join(RUNTIMES)} (got {runtime!r})")
    report_to = tuple(top.check(f"report_to[{i}]", hostport, a) for i, a in enumerate(top.strs("report_to")))
    if not report_to:  # nobody would hear it: the rack's managers would fail it over as dead
        raise top.error("report_to", "must list the rack's managers and peer agents (IP:PORT), not be empty")
    interval = top.number("report_interval", 1.0)
    if not 0.05 <= float(interval) <= 60:
        raise top.error("report_interval", f"must be between 0.05 and 60 seconds (got {interval!r})")
    state_dir = top.check("state_dir", v.path, top.str("state_dir", "/var/lib/ctagent"))
    paths_t = top.table("paths", required=False)
    given = {k: paths_t.check(k, v.path, paths_t.str(k, getattr(DEFAULT_PATHS, k))) for k in PATH_KEYS}
    paths_t.done()
    paths = Paths(export_root=DEFAULT_PATHS.export_root, **given)
    cap = top.table("capacity", required=False)
    memory = cap.any("memory")
    disk = cap.any("disk")
    reserve = cap.any("reserve_memory")
    memory_n = v.size(memory, f"{file}: capacity.memory") if memory is not None else _mem_total()
    reserve_n = v.size(reserve, f"{file}: capacity.reserve_memory", minimum=0) if reserve is not None else 256 << 20
    if reserve_n >= memory_n:  # nothing left to promise: every CT would be refused
        raise cap.error("reserve_memory", f"must be less than capacity.memory ({v.format_size(reserve_n)} >= "
                        f"{v.format_size(memory_n)})")
    cap.done()
    lxc = top.table("lxc", required=False)
    lxcpath = lxc.check("lxcpath", v.path, lxc.str("lxcpath", f"{state_dir}/lxc"))
    lxc.done()
    listen = top.check("listen", hostport, top.str("listen", "0.0.0.0:7071"))
    fencing = top.table("fencing", required=False)
    voters = frozenset(fencing.check(f"voters[{i}]", v.label, x) for i, x in enumerate(fencing.strs("voters", [hn])))
    if hn not in voters:
        raise fencing.error("voters", f"must include this HN ({hn})")
    watchdog = fencing.str("watchdog", "/dev/watchdog")
    if watchdog != "none":
        fencing.check("watchdog", v.path, watchdog)
    timers = from_table(fencing)
    fencing.done()
    metrics = top.table("metrics", required=False)
    graphite = metrics.str("graphite", "")
    if graphite:
        metrics.check("graphite", hostport, graphite)
    prefix = metrics.check("prefix", metric_name, metrics.str("prefix", f"ctmanager.rack-{rack}.{hn}"))
    metrics.done()
    top.done()
    return AgentConfig(
        file=file, rack=rack, hn=hn, key=Keyring(Path(key_file), f"{file}: key_file"), runtime=runtime, report_to=report_to,
        report_interval=float(interval), state_dir=state_dir,
        memory=memory_n,
        disk=v.size(disk, f"{file}: capacity.disk") if disk is not None else _disk_total(paths.data),
        reserve_memory=reserve_n,
        lxcpath=lxcpath, paths=paths, listen=listen, voters=voters, watchdog=watchdog, timers=timers,
        graphite=graphite, metrics_prefix=prefix,
    )


def _mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise InputError("cannot read MemTotal from /proc/meminfo")


def _disk_total(path: str) -> int:
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.statvfs(p)
    return st.f_blocks * st.f_frsize
