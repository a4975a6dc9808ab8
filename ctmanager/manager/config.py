"""The per-rack manager's configuration (TOML, strict).

    rack = "rack-101"
    name = "mgr-101-a"                      # this manager's name, unique in its rack (default: the host name)
    listen = "10.101.0.1:7070"              # where agents send reports (UDP)
    key_file = "/etc/ctmanager/rack-101.key" # the rack's HMAC key (hex), shared with its agents
    agent_command = ["ctagent", "-c", "/etc/ctagent/ctagent.toml"]
    agent_port = 7071                        # where each HN's agent hears the manager's heartbeats (UDP)
    report_interval = 1.0                    # s between heartbeats
    [ssh]
    user = "root"
    key_file = "/etc/ctmanager/id_ed25519"
    known_hosts = "/etc/ctmanager/known_hosts"  # owned by the manager: pinned keys, never auto-added
    port = 22
    connect_timeout = 5.0
    action_timeout = 30.0
    concurrency = 8
    [timers]
    stale_after = 3.0       # s without a report: the HN's state is unknown, nothing is done there
    reject_memory = 300.0   # s a rejection keeps a CT away from that HN
    full_plan_every = 1.0   # s between full plans (changed CTs are planned at once)
    [metrics]               # optional: the manager's own metrics (graphyte)
    graphite = "10.101.2.5:2003"
    prefix = "ctmanager.rack-101.manager"   # the default
    [fencing]               # must match the agents'; see "When a node fails" in README.md
    fence_after = 5.0       # s an agent without quorum waits before stopping its CTs
    watchdog_timeout = 10.0 # s an unpetted watchdog waits before resetting its node
    dead_after = 16.0       # s nobody heard an HN before its CTs start elsewhere (> the two above)
    fence_command = ["fence_ipmilan", "-a", "{ip}", "-l", "admin", "-p", "secret", "-o", "off"]  # optional:
                            # run when an HN is silent for fence_after; exit 0 = it is off, so it is
                            # dead at once. {hn} and {ip} are replaced (whole arguments, no shell)
    [crash_loop]            # optional: a CT that crashes this often is left down (ERROR) until `ct reset`
    crashes = 5             # crashes ...; 0 = restart it forever
    within = 600.0          # ... within this many seconds
    [lease]                 # optional: the leader's lease (a rack may run several managers; one leads)
    ttl = 2.0               # s a lease lasts unrenewed (renewed every ttl/3; the leader stops acting
                            # ttl/6 before it would expire, by its own monotonic clock). Keep it below
                            # fence_after - 2 x report_interval - 0.25: a takeover must finish before
                            # HNs that need the manager's vote (a rack with an HN down) fence
    [moves]                 # optional: tenant moves into this rack (`tenant move`), run by its leader
    storage_command = ["ctstorage"]  # how ctstorage is run on a storage node (over [ssh], as root)
    known_hosts = "/etc/ctmanager/storage_known_hosts"  # every storage node's host key, pinned
                            # (default: [ssh] known_hosts); a move reads the source rack's node too
    bwlimit = "50M"         # bytes/s each CT's copy may use between storage nodes (0 = no limit)
    max_passes = 3          # copies while the tenant runs, before it is stopped for the last one
    stop_timeout = 60.0     # s the source may take to stop the tenant; else the move rolls back
    start_timeout = 120.0   # s the tenant may take to be UP and resolvable here; else it rolls back
    [backups]               # optional: ctbackup on this rack's storage nodes (`ctmanager backup`)
    command = ["ctbackup"]  # how ctbackup is run on a storage node (over [ssh], [moves] known_hosts)
    poll_every = 30.0       # s: the leader reads every storage node's backup status this often:
                            # an alarm in its log per CT past 2 x RPO, restore point ages to carbon
    [retention]             # optional: how long the store keeps history
    journal_days = 7        # finished intents (the journal of actions)
    events_days = 90        # audit events (every configuration change)

`ctmanager run`, `reconcile`, `plan`, `ct exec` read it from --config or
$CTMANAGER_CONFIG.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from .. import validate as v
from ..dc import tomlread
from ..errors import InputError
from ..executor.ssh import SshSettings
from ..fencing.timers import FenceTimers, from_table
from ..files import check_private
from ..reconcile.state import Settings
from ..validate import hostport, metric_name
from ..wire.keys import Keyring

ENV_VAR = "CTMANAGER_CONFIG"


@dataclass(frozen=True)
class Retention:
    """How long the store keeps finished intents and audit events (seconds)."""

    journal: float = 7 * 86400.0
    events: float = 90 * 86400.0


@dataclass(frozen=True)
class MoveSettings:
    """How this rack's manager runs the tenant moves into its rack (manager/workflows.py)."""

    storage_command: tuple[str, ...] = ("ctstorage",)
    known_hosts: str = ""  # the storage nodes' pinned host keys ("" = the [ssh] known_hosts)
    bwlimit: int = 50 << 20  # bytes/s, 0 = none
    max_passes: int = 3
    stop_timeout: float = 60.0
    start_timeout: float = 120.0


@dataclass(frozen=True)
class BackupSettings:
    """How this rack's manager reads its storage nodes' backups (manager/backups.py)."""

    command: tuple[str, ...] = ("ctbackup",)
    poll_every: float = 30.0


@dataclass(frozen=True)
class ManagerConfig:
    file: str
    slot: int
    listen: tuple[str, int]
    key: bytes | Keyring = field(repr=False)  # the rack key (a Keyring: during a rotation the next or previous too)
    agent_command: tuple[str, ...]
    ssh: SshSettings
    action_timeout: float
    concurrency: int
    settings: Settings
    full_plan_every: float
    agent_port: int = 7071
    report_interval: float = 1.0
    timers: FenceTimers = FenceTimers()
    fence_command: tuple[str, ...] = field(default=(), repr=False)  # may hold a BMC password: never shown
    graphite: str = ""  # HOST:PORT for the manager's own metrics; "" = none
    metrics_prefix: str = ""
    retention: Retention = Retention()
    name: str = "manager"  # unique among the rack's managers: the lease's holder
    lease_ttl: float = 2.0
    moves: MoveSettings = MoveSettings()
    backups: BackupSettings = BackupSettings()


def find(explicit: str | None) -> Path:
    path = explicit or os.environ.get(ENV_VAR)
    if not path:
        raise InputError(f"no manager config: give --config FILE or set ${ENV_VAR} (the lab writes one: ctmanager lab up)")
    return Path(path)


def load(path: Path) -> ManagerConfig:
    if not path.is_file():
        raise InputError(f"{path}: no such manager config")
    top = tomlread.load(path)
    file = str(path)
    rack = top.str("rack")
    if not rack.startswith("rack-") or not v.is_digits(rack[5:]):
        raise top.error("rack", f"must be rack-SLOT like rack-101 (got {rack!r})")
    name = top.check("name", v.label, top.str("name", default_name()))
    listen = top.check("listen", hostport, top.str("listen"))
    key = Keyring(Path(top.check("key_file", v.path, top.str("key_file"))), f"{file}: key_file")
    agent_command = top.strs("agent_command", ["ctagent"])
    if not agent_command:
        raise top.error("agent_command", "must not be empty")
    ssh = top.table("ssh")
    settings = SshSettings(
        user=ssh.check("user", v.label, ssh.str("user", "root")),
        key_file=ssh.check("key_file", v.path, ssh.str("key_file")),
        known_hosts=ssh.check("known_hosts", v.path, ssh.str("known_hosts")),
        port=ssh.check("port", lambda x, f: v.integer(x, f, minimum=1, maximum=65535), ssh.int("port", 22)),
        connect_timeout=_seconds(ssh, "connect_timeout", 5.0),
    )
    check_private(settings.key_file, "SSH key", where=f"{file}: ssh.key_file")
    action_timeout = _seconds(ssh, "action_timeout", 30.0)
    concurrency = ssh.check("concurrency", lambda x, f: v.integer(x, f, minimum=1, maximum=256), ssh.int("concurrency", 8))
    ssh.done()
    timers = top.table("timers", required=False)
    crash = top.table("crash_loop", required=False)
    reconcile = Settings(stale_after=_seconds(timers, "stale_after", 3.0),
                         reject_memory=_seconds(timers, "reject_memory", 300.0),
                         crash_limit=crash.check("crashes", lambda x, f: v.integer(x, f, minimum=0, maximum=1000),
                                                 crash.int("crashes", 5)),
                         crash_window=_seconds(crash, "within", 600.0))
    crash.done()
    full_every = _seconds(timers, "full_plan_every", 1.0)
    timers.done()
    agent_port = top.check("agent_port", lambda x, f: v.integer(x, f, minimum=1, maximum=65535),
                           top.int("agent_port", 7071))
    interval = _seconds(top, "report_interval", 1.0)
    fencing = top.table("fencing", required=False)
    fence_command = tuple(fencing.strs("fence_command", [], secret=True))
    fence = from_table(fencing)
    fencing.done()
    metrics = top.table("metrics", required=False)
    graphite = metrics.str("graphite", "")
    if graphite:
        metrics.check("graphite", hostport, graphite)
    prefix = metrics.check("prefix", metric_name,
                           metrics.str("prefix", f"ctmanager.{rack}.manager"))
    metrics.done()
    keep = top.table("retention", required=False)
    retention = Retention(journal=_days(keep, "journal_days", 7), events=_days(keep, "events_days", 90))
    keep.done()
    lease = top.table("lease", required=False)
    ttl = lease.number("ttl", 2.0)
    if not 1 <= float(ttl) <= 300:
        raise lease.error("ttl", f"must be between 1 and 300 seconds (got {ttl!r})")
    lease.done()
    moving = _moves(top.table("moves", required=False))
    backing = top.table("backups", required=False)
    command = backing.strs("command", ["ctbackup"])
    if not command:
        raise backing.error("command", "must not be empty")
    backups = BackupSettings(tuple(command), _seconds(backing, "poll_every", 30.0))
    backing.done()
    top.done()
    return ManagerConfig(file, int(rack[5:]), listen, key, tuple(agent_command), settings, action_timeout,
                         concurrency, reconcile, full_every, agent_port, interval, fence, fence_command, graphite,
                         prefix, retention, name, float(ttl), moving, backups)


def _moves(t: tomlread.Table) -> MoveSettings:
    command = t.strs("storage_command", ["ctstorage"])
    if not command:
        raise t.error("storage_command", "must not be empty")
    bw = t.scalar("bwlimit", "50M")
    bwlimit = 0 if bw in (0, "0") else t.check("bwlimit", lambda x, f: v.size(x, f, minimum=1 << 10), bw)
    passes = t.check("max_passes", lambda x, f: v.integer(x, f, minimum=1, maximum=20), t.int("max_passes", 3))
    known = t.check("known_hosts", v.path, t.str("known_hosts")) if t.str("known_hosts", None) is not None else ""
    out = MoveSettings(tuple(command), known, bwlimit, passes, _seconds(t, "stop_timeout", 60.0),
                       _seconds(t, "start_timeout", 120.0))
    t.done()
    return out


def default_name() -> str:
    """The host's short name, if it is a DNS label (else "manager")."""
    host = socket.gethostname().split(".")[0].lower()
    return host if v.is_label(host) else "manager"


def _days(t: tomlread.Table, key: str, default: float) -> float:
    value = t.number(key, default)
    if not 1 <= float(value) <= 36500:
        raise t.error(key, f"must be between 1 and 36500 days (got {value!r})")
    return float(value) * 86400


def _seconds(t: tomlread.Table, key: str, default: float) -> float:
    value = t.number(key, default)
    if not 0.01 <= float(value) <= 86400:
        raise t.error(key, f"must be between 0.01 and 86400 seconds (got {value!r})")
    return float(value)
