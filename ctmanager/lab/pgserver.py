"""A private PostgreSQL cluster for the lab and the tests: `initdb` in a folder,
a unix socket in it, no TCP (FIELD-NOTES: about 3 s to make and start).
PostgreSQL refuses to run as root, so as root the cluster belongs to the
`postgres` user (Debian's postgresql-15 package creates it). Idempotent: a
cluster already made is started, one already running is used."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from ..errors import CtmError

BIN = Path("/usr/lib/postgresql/15/bin")


class PgError(CtmError):
    pass


def binary(name: str) -> str:
    found = BIN / name
    if found.exists():
        return str(found)
    other = shutil.which(name)
    if other is None:
        raise PgError(f"PostgreSQL's {name} is not installed (apt install postgresql-15)")
    return other


class Cluster:
    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.data, self.sock, self.log = self.folder / "data", self.folder / "sock", self.folder / "postgres.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql:///{dbname}?host={self.sock}&user=postgres"

    def _as_owner(self, *argv: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=120)

    def start(self) -> Cluster:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sock.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PgError("no postgres user (apt install postgresql-15 creates it)") from None
            for folder in (self.folder, self.sock):
                os.chown(folder, owner.pw_uid, owner.pw_gid)
            for parent in self.folder.parents:  # the postgres user must reach the folder
                if not parent.stat().st_mode & 0o001:
                    raise PgError(f"{parent} is closed to other users: the cluster's folder must be reachable by "
                                  f"the postgres user (use a folder outside it)")
        if not (self.data / "PG_VERSION").exists():
            p = self._as_owner(binary("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                               "--locale=C.UTF-8", "-E", "UTF8")
            if p.returncode != 0:
                raise PgError(f"initdb failed: {(p.stderr or p.stdout).strip()[-400:]}")
        if self.running():
            return self
        opts = f"-k {self.sock} -c listen_addresses='' -c fsync=off -c max_connections=200"
        p = self._as_owner(binary("pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w", "start")
        if p.returncode != 0:
            tail = self.log.read_text(errors="replace")[-600:] if self.log.exists() else p.stderr
            raise PgError(f"PostgreSQL did not start: {tail.strip()}")
        return self

    def running(self) -> bool:
        return self._as_owner(binary("pg_ctl"), "-D", str(self.data), "status").returncode == 0

    def stop(self) -> None:
        if (self.data / "PG_VERSION").exists() and self.running():
            self._as_owner(binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def create_database(self, name: str) -> str:
        """An empty database (made, or emptied); its URL."""
        from ..store.pg import empty_database

        empty_database(self.url(), name)
        return self.url(name)


def main(argv: list[str] | None = None) -> int:
    """`python -m ctmanager.lab.pgserver start|stop DIR [--database NAME]`: a
    private cluster in DIR (made if need be) for scripts/test.sh and the DC lab;
    `start` prints its URL, with --database that of an empty database NAME (made,
    or emptied: for a lab that starts afresh)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="ctmanager.lab.pgserver", description=main.__doc__)
    ap.add_argument("action", choices=("start", "stop"))
    ap.add_argument("folder", type=Path)
    ap.add_argument("--database", metavar="NAME", help="an empty database of this name (letters, digits, _)")
    args = ap.parse_args(argv)
    cluster = Cluster(args.folder)
    try:
        if args.action == "start":
            cluster.start()
            print(cluster.create_database(args.database) if args.database else cluster.url())
        else:
            cluster.stop()
    except (CtmError, OSError) as exc:
        sys.stderr.write(f"pgserver: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
