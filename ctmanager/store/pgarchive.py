"""A PostgreSQL store's own backups: pg_dump and pg_restore in their custom format
(`store backup`, `store restore`; archive.py handles the files).

pg_dump reads the whole store in one snapshot (REPEATABLE READ), so the archive is
one committed state while managers write on. The connection reaches the tools
without its password on their command line (which any user of the machine may
read): the password goes into a PGPASSFILE only this user may read, in a private
folder removed afterwards; the command line holds the rest of the connection
string, with the store's liveness settings. A restore is one transaction
(--single-transaction --exit-on-error): the database is left empty if it fails.
It belongs to the restoring role (--no-owner); grants are not restored
(--no-privileges: the roles may not exist where the store is restored to).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .. import files
from ..errors import ConflictError, StoreError
from ..validate import is_digits
from .db import redact, scrub
from .pg import LIVENESS, connect

DEBIAN_BINS = Path("/usr/lib/postgresql")
_TABLE = re.compile(r'(?:dumping contents of|processing data for) table "(?:[^"]*\.)?([^"]+)"')
_KEEP = ("connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
         "tcp_user_timeout")


def tool(name: str) -> str:
    """pg_dump or pg_restore: on PATH (Debian's wrapper picks the newest version),
    else the newest under /usr/lib/postgresql/*/bin; else one line saying what to do."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(DEBIAN_BINS.glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]) if is_digits(p.parts[-3]) else 0)
    if versions:
        return str(versions[-1])
    raise StoreError(f"{name} is not installed here (Debian: apt install postgresql-client), so ctmanager cannot "
                     f"{'back up' if name == 'pg_dump' else 'restore'} a PostgreSQL store; or run it yourself: "
                     "pg_dump --format=custom --file=FILE 'postgresql://USER@HOST/DB' (the password in ~/.pgpass)")


@contextlib.contextmanager
def libpq(url: str, purpose: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(the connection string without secrets, the tool's environment): a password
    the URL holds is in a private PGPASSFILE for as long as this lasts."""
    try:
        info = {k: str(v) for k, v in conninfo_to_dict(url).items()}
    except Exception:  # noqa: BLE001 - psycopg's message echoes the URL, password included
        raise StoreError(f"{redact(url)}: not a usable PostgreSQL URL") from None
    if "sslpassword" in info:
        raise StoreError(f"{redact(url)}: an sslpassword in the URL cannot reach {purpose} without its command line: "
                         "use a key without a passphrase for it, or run pg_dump/pg_restore yourself")
    password = info.pop("password", "")
    for key in _KEEP:
        info.setdefault(key, str(LIVENESS[key]))
    info["application_name"] = f"ctmanager {purpose}"
    env = dict(os.environ)
    folder = None
    try:
        if password:
            folder = tempfile.mkdtemp(prefix="ctm-pgpass-")  # 0700, ours
            passfile = Path(folder, "pgpass")
            escaped = password.replace("\\", "\\\\").replace(":", "\\:")
            files.write_atomic(passfile, f"*:*:*:*:{escaped}\n".encode(), 0o600)
            env["PGPASSFILE"] = str(passfile)
            env.pop("PGPASSWORD", None)  # it would win over the file
        yield make_conninfo("", **info), env
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _run(argv: list[str], env: dict[str, str], url: str, what: str, stdin: int | None, stdout: int | IO[bytes],
         progress: Callable[[str], None]) -> None:
    """Run a tool, its verbose lines as progress (one per table), its first error
    as one line without the URL's secrets."""
    proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=env, text=True,
                            errors="replace")
    errors: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        table = _TABLE.search(line)
        if table:
            progress(f"table {table.group(1)}")
        elif "error:" in line or "FATAL" in line:
            errors.append(line.strip())
    if proc.wait() != 0:
        first = errors[0] if errors else f"exit status {proc.returncode}"
        raise StoreError(f"{redact(url)}: {what} failed: {scrub(first, url)}")


def dump(url: str, out: int, progress: Callable[[str], None]) -> None:
    """The store at `url` into the open file `out` (pg_dump's custom format)."""
    with libpq(url, "store backup") as (conninfo, env):
        _run([tool("pg_dump"), "--format=custom", "--verbose", f"--dbname={conninfo}"], env, url, "pg_dump",
             None, out, progress)


def archive_meta(archive: int, where: str) -> dict[str, str]:
    """The `meta` rows of a pg_dump archive (the open file `archive`), which also
    proves pg_restore can read it; {} when it has no such table."""
    os.lseek(archive, 0, os.SEEK_SET)
    p = subprocess.run([tool("pg_restore"), "--data-only", "--table=meta", "--file=-"], stdin=archive,
                       capture_output=True, text=True, errors="replace", timeout=600)
    os.lseek(archive, 0, os.SEEK_SET)
    if p.returncode != 0:
        line = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[0]
        raise StoreError(f"{where}: not a readable pg_dump archive: {line}")
    rows: dict[str, str] = {}
    inside = False
    for line in p.stdout.splitlines():
        if line.startswith("COPY ") and " FROM stdin;" in line:
            inside = True
        elif inside and line == "\\.":
            inside = False
        elif inside and "\t" in line:
            key, value = line.split("\t", 1)
            rows[key] = value
    return rows


def tables_in(url: str) -> int:
    """How many tables the database's schema holds (a restore goes into none)."""
    with connect(url) as con:
        try:
            row = con.execute("SELECT count(*) FROM information_schema.tables "
                              "WHERE table_schema = current_schema()").fetchone()
        except psycopg.Error as exc:
            raise StoreError(f"{redact(url)}: cannot read the database: {scrub(str(exc).strip(), url)}") from None
    return int(row[0]) if row else 0


def refuse_unless_empty(url: str) -> None:
    held = tables_in(url)
    if held:
        raise ConflictError(f"{redact(url)}: the database holds {held} table(s): a store is restored into an empty "
                            "database only (make one: createdb; or move the old one aside: ALTER DATABASE ... "
                            "RENAME TO ...)")


def restore(url: str, archive: int, progress: Callable[[str], None]) -> None:
    """The archive (the open file `archive`) into the empty database at `url`."""
    refuse_unless_empty(url)
    os.lseek(archive, 0, os.SEEK_SET)
    with libpq(url, "store restore") as (conninfo, env):
        _run([tool("pg_restore"), "--exit-on-error", "--single-transaction", "--no-owner", "--no-privileges",
              "--verbose", f"--dbname={conninfo}"], env, url, "pg_restore", archive, subprocess.DEVNULL, progress)
