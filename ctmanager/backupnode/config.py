"""ctbackup's config ($CTBACKUP_CONFIG, default /etc/ctmanager/ctbackup.toml):

    data = "/export/data"                # the CT folders, <data>/<CTID>
    node = "storage-101-4"               # this storage node (archive names)
    state_dir = "/var/lib/ctbackup"      # its catalogue and borg's cache (the files cache)
    rpo = 60                             # s: a restore point older than 2 x this is an alarm
    hook_every = 300                     # s: a CT with a pre-backup hook (hook.py) is asked at most this often
    hook_timeout = 30                    # s a cycle waits for the hooks' answers

    [repository]                         # one per storage node, in its realm's place on the backup node
    location = "ssh://ctbackup@10.101.1.9/./eu-west/storage-101-4"
    passphrase_file = "/etc/ctmanager/backup.pass"       # mode 0600; never printed
    key_file = "/etc/ctmanager/backup_ed25519"           # may add restore points, never remove them
    known_hosts = "/etc/ctmanager/backup_known_hosts"    # the backup node's host key, pinned

    [limits]                             # never starve the application
    upload = "20M"                       # bytes/s to the repository
    nice = 10                            # CPU priority of borg (0..19)
    ionice = 7                           # I/O priority of borg (best-effort class, 0..7)
    io_pressure = 40                     # % (PSI some avg10) over which it waits ...
    load_per_cpu = 4.0                   # ... or this load per CPU, where the kernel has no PSI
    max_hold = 20                        # s it waits at most, then backs up anyway

Unknown keys are errors; every path and name is validated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .. import validate as v
from ..dc import tomlread
from ..errors import InputError
from ..files import check_private
from .borg import Repo

ENV_VAR = "CTBACKUP_CONFIG"
DEFAULT = "/etc/ctmanager/ctbackup.toml"
_SSH = re.compile(r"ssh://[a-z_][a-z0-9_-]{0,31}@[A-Za-z0-9.-]+(:\d{1,5})?/[A-Za-z0-9._/-]+")


@dataclass(frozen=True)
class Limits:
    upload: int = 20 << 20
    nice: int = 10
    ionice: int = 7
    io_pressure: float = 40.0
    load_per_cpu: float = 4.0
    max_hold: float = 20.0


@dataclass(frozen=True)
class BackupConfig:
    data: str
    node: str
    state_dir: str
    rpo: int
    repo: Repo
    limits: Limits
    scan_every: int = 3600
    hook_every: float = 300.0
    hook_timeout: float = 30.0


def location(value: object, field: str) -> str:
    """ssh://user@host[:port]/path, or an absolute local path (the backup node's own side)."""
    if isinstance(value, str) and (_SSH.fullmatch(value) and ".." not in value.split("/")):
        return value
    if isinstance(value, str) and value.startswith("/"):
        return v.path(value, field)
    raise InputError(f"must be ssh://user@host/path or an absolute path (got {value!r})", where=field)


def _number(t: tomlread.Table, key: str, default: float, low: float, high: float) -> float:
    value = float(t.number(key, default))
    if not low <= value <= high:
        raise t.error(key, f"must be between {low:g} and {high:g} (got {value:g})")
    return value


def load(path: Path) -> BackupConfig:
    top = tomlread.load(path)
    data = top.check("data", v.path, top.str("data", "/export/data"))
    node = top.check("node", v.label, top.str("node"))
    state = top.check("state_dir", v.path, top.str("state_dir", "/var/lib/ctbackup"))
    rpo = int(_number(top, "rpo", 60, 5, 86400))
    scan_every = int(_number(top, "scan_every", 3600, 60, 7 * 86400))
    hook_every = _number(top, "hook_every", 300, 0, 86400)
    hook_timeout = _number(top, "hook_timeout", 30, 1, 3600)
    r = top.table("repository")
    loc = r.check("location", location, r.str("location"))
    ssh = loc.startswith("ssh://")
    repo = Repo(loc, r.check("passphrase_file", v.path, r.str("passphrase_file", "/etc/ctmanager/backup.pass")),
                str(Path(state) / "borg"),
                r.check("key_file", v.path, r.str("key_file", "/etc/ctmanager/backup_ed25519")) if ssh else "",
                r.check("known_hosts", v.path, r.str("known_hosts", "/etc/ctmanager/backup_known_hosts"))
                if ssh else "",
                int(_number(r, "connect_timeout", 5, 1, 120)))
    r.done()
    # borg reads them on every cycle: a secret others may read is refused before the first
    check_private(repo.passphrase_file, "borg passphrase file", where=f"{path}: repository.passphrase_file")
    if repo.key_file:
        check_private(repo.key_file, "backup SSH key", where=f"{path}: repository.key_file")
    lt = top.table("limits", required=False)
    limits = Limits(lt.check("upload", lambda x, f: v.size(x, f, minimum=1 << 10), lt.scalar("upload", "20M")),
                    int(_number(lt, "nice", 10, 0, 19)), int(_number(lt, "ionice", 7, 0, 7)),
                    _number(lt, "io_pressure", 40, 0, 100), _number(lt, "load_per_cpu", 4.0, 0, 1000),
                    _number(lt, "max_hold", 20, 0, 3600))
    lt.done()
    top.done()
    return BackupConfig(data, node, state, rpo, repo, limits, scan_every, hook_every, hook_timeout)
