"""The daemons' log lines (ctmanager run, ctagent, ctmailmap, ctbackup): one setup for all.

Every daemon logs to stderr. Where that goes decides the line:

- **journald** (a systemd unit's default): $JOURNAL_STREAM names the stream journald
  gave the service, as `DEVICE:INODE`, and stderr is that very stream. Then each line
  starts with its syslog priority, `<3>ERROR cannot …`, which journald takes as the
  entry's PRIORITY (and strips), so `journalctl -p err -u ctmanager` shows the errors
  and alarms; and it has no timestamp or program name, which journald records itself
  (one `Dec 07 10:00:01 mgr-101-a ctmanager[812]:` prefix, not two).
- anything else (a terminal, a file of the lab's, daemontools' multilog, a unit whose
  output a drop-in sends to a file): today's lines, `2026-12-07 10:00:01,123 ctagent
  INFO …` (ctbackup: `2026-12-07T10:00:01Z ctbackup: …`), which tools and tests read.

Priorities: DEBUG 7, INFO 6, WARNING 4, ERROR 3, CRITICAL 2; a line that says
`ALARM …` (a backup past twice its RPO, a repository that fails: the lines ops must
act on) is at least 3 (err), whatever level it was logged at. Each line of a
multi-line record (a traceback) carries the prefix: journald makes each an entry.

A daemon's setup also turns on faulthandler: a daemon that systemd's watchdog aborts
(SIGABRT) leaves every thread's stack in its log, which says where it was stuck.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import IO

from .validate import is_digits

DEBUG, INFO, WARNING, ERR, CRIT = 7, 6, 4, 3, 2  # syslog priorities (RFC 5424)
ALARM = "ALARM"  # a message that starts with this is an alarm: priority err at least
NOISY = ("paramiko", "invoke", "fabric")  # libraries whose INFO lines say nothing to ops


def priority(record: logging.LogRecord) -> int:
    """The syslog priority of a record: its level's, raised to err for an ALARM line."""
    n = record.levelno
    p = DEBUG if n <= logging.DEBUG else INFO if n <= logging.INFO else WARNING if n <= logging.WARNING \
        else ERR if n <= logging.ERROR else CRIT
    if p > ERR and record.getMessage().startswith(ALARM):
        p = ERR
    return p


class JournalFormatter(logging.Formatter):
    """`<N>LEVEL message`: for a stream journald reads (no time, no program name)."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record)}>"
        return prefix + super().format(record).replace("\n", "\n" + prefix)


def under_journal(stream: IO[str] | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether `stream` (stderr) is the stream journald gave this service: $JOURNAL_STREAM
    is `DEVICE:INODE` of it (systemd.exec(5)). A child whose stderr was sent elsewhere
    inherits the variable but not the stream, so both must match."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (is_digits(dev) and is_digits(ino)):
        return False
    try:
        st = os.fstat((sys.stderr if stream is None else stream).fileno())
    except (OSError, ValueError, AttributeError):  # closed, or no file descriptor (a test's StringIO)
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def formatter(program: str, *, stream: IO[str] | None = None, environ: Mapping[str, str] | None = None,
              fmt: str = "", datefmt: str | None = None, utc: bool = False) -> logging.Formatter:
    """The journal's formatter under journald; else `fmt` (default `%(asctime)s PROGRAM
    %(levelname)s %(message)s`), with `datefmt`, times in UTC if `utc`."""
    if under_journal(stream, environ):
        return JournalFormatter()
    f = logging.Formatter(fmt or f"%(asctime)s {program} %(levelname)s %(message)s", datefmt)
    if utc:
        f.converter = time.gmtime
    return f


def setup(program: str, level: int = logging.INFO, *, fmt: str = "", datefmt: str | None = None,
          utc: bool = False) -> None:
    """A daemon's logging: the root logger to stderr with `formatter(...)`, like
    logging.basicConfig (nothing changes when the root logger has handlers already, as
    under pytest); quiet SSH libraries; faulthandler on."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(program, fmt=fmt, datefmt=datefmt, utc=utc))
    logging.basicConfig(level=level, handlers=[handler])
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, level))
    if not faulthandler.is_enabled():
        try:
            faulthandler.enable()  # to stderr: the journal (or the daemon's log file)
        except (OSError, ValueError, AttributeError, RuntimeError):  # stderr without a file descriptor
            pass
