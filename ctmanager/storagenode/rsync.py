"""rsync as a fact and an operation: the command line of one pull, and a parser of
what `--stats` prints (tested against captured output)."""

from __future__ import annotations

import re
from dataclasses import dataclass

OK_CODES = (0, 24)  # 24: files vanished while copying (a live pass); the final pass runs with the CTs down
_NUM = r"([\d,.]+)"
_STATS = {
    "files": rf"Number of files: {_NUM}",
    "files_transferred": rf"Number of regular files transferred: {_NUM}",
    "total_bytes": rf"Total file size: {_NUM} bytes",
    "bytes": rf"Total transferred file size: {_NUM} bytes",
    "literal": rf"Literal data: {_NUM} bytes",
}


@dataclass(frozen=True)
class Stats:
    files: int  # in the source tree (files, folders, links)
    files_transferred: int
    total_bytes: int  # the source tree's file sizes
    bytes: int  # of the files that changed (what this pass had to bring over)
    literal: int  # what crossed the wire (changed parts, before compression)


class RsyncStatsError(ValueError):
    pass


def parse_stats(text: str) -> Stats:
    """The figures of `rsync --stats` output (thousands separators allowed)."""
    got: dict[str, int] = {}
    for key, pattern in _STATS.items():
        m = re.search(pattern, text)
        if m is None:
            raise RsyncStatsError(f"rsync printed no {pattern.split(':')[0]!r} line")
        got[key] = int(m.group(1).replace(",", "").replace(".", ""))
    return Stats(**got)


def pull_argv(rsync: str, source: str, target: str, *, ssh: list[str], bwlimit: int, timeout: int) -> list[str]:
    """`rsync` mirroring `source` (host:/path/, over `ssh`) into `target`/. The ssh
    command is one string rsync splits on spaces, so its parts must have none
    (config paths are checked when read). Mtimes are compared to the nanosecond,
    so a file rewritten within a second of the last pass is copied again."""
    if any(" " in part or not part for part in ssh):
        raise ValueError("ssh arguments must be non-empty and have no spaces")
    # --modify-window=-1: compare mtimes to the nanosecond (the default is whole
    # seconds: a same-size rewrite within the second of the last pass is missed)
    # hard links, ACLs and extended attributes (file capabilities among them) too: /data is a whole file system
    argv = [rsync, "--archive", "--hard-links", "--acls", "--xattrs", "--delete", "--numeric-ids", "--stats",
            "--modify-window=-1", f"--timeout={timeout}",
            "--rsh=" + " ".join(ssh)]
    if bwlimit > 0:
        argv.append(f"--bwlimit={max(bwlimit // 1024, 1)}")  # KiB/s
    return argv + [source.rstrip("/") + "/", target.rstrip("/") + "/"]


def failure(rc: int, stderr: str) -> str:
    """One line saying why an rsync failed."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    if "No space left on device" in stderr:
        return "target storage full: No space left on device"
    if rc == 20 or rc < 0 or "received SIGINT, SIGTERM, or SIGHUP" in stderr:
        return f"rsync was killed (exit {rc})"
    if rc in (30, 35):
        return f"rsync timed out (exit {rc})"
    if rc == 255 or "Host key verification failed" in stderr:
        return "ssh to the source storage node failed: " + (lines[0] if lines else f"exit {rc}")
    detail = next((ln for ln in lines if ln.startswith("rsync:") or "error" in ln.lower()), lines[-1] if lines else "")
    return f"rsync exit {rc}: {detail[:300]}"
