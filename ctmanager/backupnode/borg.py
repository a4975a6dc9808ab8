"""borg 1.2, as the backup daemon runs it: command lines (argv lists, nothing goes
through a shell; paths are CTIDs relative to the storage node's data folder) and
parsers of what borg prints (facts: each parser is tested with captured output).

One archive holds every CT that changed since the cycle before (a repository has
one writer at a time, and one `borg create` of many folders costs one process
start, one SSH login and one repository open instead of one each per CT). The
archive's name carries the exact UTC start (borg's own times are local and whole
seconds), its comment the CTIDs it holds: a CT's restore points are the archives
that name it.

Exit codes (borg 1.2): 0 done, 1 done with warnings (e.g. a file vanished while
read: it is backed up again next cycle), 2 error.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from .. import validate as v
from ..errors import InputError

NAME_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
_NAME = re.compile(r"(?P<node>[a-z0-9][a-z0-9-]*)-(?P<at>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)")
COMMENT_PREFIX = "cts "
OK, WARNING, ERROR = 0, 1, 2
CHECKPOINT = 10   # s
LOCK_WAIT = 10    # s a create waits for the repository's lock (a previous one still closing)
RESTORE_LOCK_WAIT = 900  # s a restore, check or prune tries for the repository while a backup holds it
# borg drops a files cache entry after this many runs that did not see its file (its default, 20, is
# for runs of the same folders; ours take the CTs that changed, so a quiet CT's unchanged files would
# be read and hashed again whole after 20 other CTs' cycles); deleted files' entries go after as many
FILES_CACHE_TTL = 100_000


@dataclass(frozen=True)
class Repo:
    """Where restore points go: `location` is ssh://user@host/path (the backup node's
    forced command decides what that key may do) or a local path (the prune side)."""

    location: str
    passphrase_file: str
    base_dir: str          # borg's cache and security folders (the files cache lives here)
    key_file: str = ""     # SSH, for an ssh:// location
    known_hosts: str = ""
    connect_timeout: int = 5


@dataclass(frozen=True)
class Archive:
    name: str
    node: str
    at: float              # the cycle's start, UTC epoch seconds: what the data is as of
    ctids: tuple[int, ...]


@dataclass(frozen=True)
class Created:
    name: str
    files: int
    original: int          # bytes read
    deduplicated: int      # bytes new to the repository (what went over the wire, compressed)
    duration: float
    repository: int = 0    # bytes the whole repository holds, deduplicated and compressed


def env(repo: Repo, reader: bool = False) -> dict[str, str]:
    """borg's environment: the passphrase from its file (never in argv or the
    environment itself), pinned SSH, and refusals instead of prompts. `reader`: for
    listings, restores and checks, a base folder of their own, since the daemon's
    running backup holds its cache's lock for its whole length."""
    base = v.path(repo.base_dir, "base_dir")
    e = {"BORG_PASSCOMMAND": f"cat {shlex.quote(v.path(repo.passphrase_file, 'passphrase_file'))}",
         "BORG_BASE_DIR": f"{base}-read" if reader else base, "BORG_FILES_CACHE_TTL": str(FILES_CACHE_TTL),
         "BORG_RELOCATED_REPO_ACCESS_IS_OK": "no", "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "no",
         "LANG": "C.UTF-8"}
    if repo.location.startswith("ssh://"):
        e["BORG_RSH"] = shlex.join(["ssh", "-i", v.path(repo.key_file, "key_file"),
                                    "-o", f"UserKnownHostsFile={v.path(repo.known_hosts, 'known_hosts')}",
                                    "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                                    "-o", f"ConnectTimeout={repo.connect_timeout}",
                                    "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3"])
    return e


def archive_name(node: str, at: float) -> str:
    return f"{v.label(node, 'node')}-{datetime.fromtimestamp(at, UTC).strftime(NAME_TIME)}"


def parse_name(name: str) -> tuple[str, float] | None:
    """(node, UTC start) of an archive this daemon named; None for any other."""
    m = _NAME.fullmatch(name)
    if not m:
        return None
    at = datetime.strptime(m["at"], NAME_TIME).replace(tzinfo=UTC)
    return m["node"], at.timestamp()


def init_argv(repo: Repo) -> list[str]:
    """Not --append-only in the repository's own config: the storage node's key is held
    to appending by its forced command on the backup node (`borg serve --append-only`),
    and the prune key, whose command lacks it, must be able to free space."""
    return ["borg", "init", "--encryption=repokey-blake2", repo.location]


def prune_argv(repo: Repo, keep_within: str) -> list[str]:
    return ["borg", "prune", "--lock-wait", str(LOCK_WAIT), "--keep-within", keep_within, "--stats",
            repo.location]


def compact_argv(repo: Repo) -> list[str]:
    return ["borg", "compact", "--lock-wait", str(LOCK_WAIT), repo.location]


def create_argv(repo: Repo, archive: str, ctids: list[int], upload_kib: int = 0) -> list[str]:
    """Run with the data folder as the working directory. ctime,size,inode: a file
    whose content changed but kept its size and mtime is still read again."""
    if not ctids:
        raise InputError("a backup of no CT")
    rate = ["--upload-ratelimit", str(upload_kib)] if upload_kib > 0 else []
    # a checkpoint every CHECKPOINT s commits what was sent: a killed backup resumes from there
    return ["borg", "create", "--json", "--files-cache=ctime,size,inode", "--compression=lz4", *rate,
            "--checkpoint-interval", str(CHECKPOINT), "--lock-wait", str(LOCK_WAIT),
            "--comment", COMMENT_PREFIX + " ".join(str(c) for c in sorted(ctids)),
            f"{repo.location}::{archive}", "--", *(str(c) for c in sorted(ctids))]


def lock_timeout(stderr: str) -> bool:
    """borg's "Failed to create/acquire the lock ... (timeout)": another borg holds the repository."""
    return "Failed to create/acquire the lock" in stderr


def missing_repository(stderr: str) -> bool:
    """borg's "Repository … does not exist." (the first backup: init it)."""
    return "does not exist" in stderr and "Repository" in stderr


def list_argv(repo: Repo, bypass_lock: bool = False) -> list[str]:
    """`bypass_lock`: read the last committed state without the repository's lock, which
    a running backup holds for its whole length (a listing is only read)."""
    lock = ["--bypass-lock"] if bypass_lock else ["--lock-wait", str(LOCK_WAIT)]
    return ["borg", "list", *lock, "--format", "{name}{TAB}{comment}{NL}", repo.location]


def extract_argv(repo: Repo, archive: str, ctid: int) -> list[str]:
    """Run in the folder to restore into: the CT's files land in ./<CTID>/."""
    return ["borg", "extract", "--lock-wait", str(LOCK_WAIT), "--numeric-ids", f"{repo.location}::{archive}",
            "--", str(ctid)]


def check_argv(repo: Repo, verify_data: bool = True) -> list[str]:
    return ["borg", "check", "--lock-wait", str(LOCK_WAIT), *(["--verify-data"] if verify_data else []),
            repo.location]


def parse_create(text: str) -> Created:
    try:
        got = json.loads(text)
        a = got["archive"]
        return Created(str(a["name"]), int(a["stats"]["nfiles"]), int(a["stats"]["original_size"]),
                       int(a["stats"]["deduplicated_size"]), float(a["duration"]),
                       int(got.get("cache", {}).get("stats", {}).get("unique_csize", 0)))
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"borg create printed no archive summary ({type(exc).__name__}: {exc})") from None


def parse_list(text: str) -> list[Archive]:
    """Our archives, oldest first; lines of any other archive are skipped."""
    out = []
    for line in text.splitlines():
        name, _, comment = line.partition("\t")
        parsed = parse_name(name.strip())
        if parsed is None or not comment.startswith(COMMENT_PREFIX):
            continue
        ctids = tuple(int(c) for c in comment[len(COMMENT_PREFIX):].split() if v.is_digits(c))
        out.append(Archive(name.strip(), parsed[0], parsed[1], ctids))
    return sorted(out, key=lambda a: a.at)


def points(archives: list[Archive], ctid: int) -> list[Archive]:
    """The restore points of one CT."""
    return [a for a in archives if ctid in a.ctids]


def newest_before(archives: list[Archive], ctid: int, at: float | None = None) -> Archive | None:
    """The CT's newest restore point as of `at` (None: now)."""
    limit = time.time() if at is None else at
    mine = [a for a in points(archives, ctid) if a.at <= limit]
    return mine[-1] if mine else None
