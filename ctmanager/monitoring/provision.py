"""What every CT's /data gets for monitoring when its HN creates it (ctagent):

    /data/sys_collectd/identity.conf   Hostname "<dc>.<rack>.<hostname>" (metric prefix)
    /data/sys_collectd/conf/           ctautolink's links, and the CT's own plugin files
    /data/service/sys_collectd/run     collectd -f -C /sw/collectd/cloud.conf
    /data/service/sys_autolink/run     /sw/bin/ctautolink
    /data/service/*/log/run            multilog into /data/log/<service>

Run scripts that exist are left alone (a CT may run its own); identity.conf is
ctmanager's and kept current (a CT renamed or moved to another rack)."""

from __future__ import annotations

import os
from pathlib import Path

from ..dc.model import rack_name
from ..files import make_dirs, same_content, write_atomic

# svscan as a CT's init has no PATH at all: every run script sets its own
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH\n"
SERVICES = {
    "sys_collectd": "#!/bin/sh\n# collectd for this CT (ctmanager); plugins come and go with services (ctautolink)\n"
                    f"{PATH}exec collectd -f -C /sw/collectd/cloud.conf 2>&1\n",
    "sys_autolink": "#!/bin/sh\n# links the collectd plugins of the services present (ctmanager)\n"
                    f"{PATH}exec /sw/bin/ctautolink 2>&1\n",
}


def provision(data: Path, dc: str, rack: int, hostname: str) -> bool:
    """Returns whether anything was written. Names are validated labels already."""
    changed = False
    identity = data / "sys_collectd" / "identity.conf"
    text = f'Hostname "{dc}.{rack_name(rack)}.{hostname}"\n'.encode()
    # /data belongs to the CT (its root may put a link anywhere in it); this runs as the
    # HN's root: every folder below /data is made or checked real, never followed
    make_dirs(data / "sys_collectd" / "conf", under=data)
    make_dirs(data / "log", under=data)  # multilog makes its own folder, not the parent
    if same_content(identity, text, 0o644) is None:
        write_atomic(identity, text, 0o644, under=data)
        changed = True
    for name, run in SERVICES.items():
        changed |= write_service(data, name, run, keep=True)
    return changed


def write_service(data: Path, name: str, run: str, *, keep: bool = False) -> bool:
    """/data/service/<name>/run and its log/run (multilog into /data/log/<name>).
    `keep`: leave scripts that exist alone. Returns whether anything was written."""
    wrote = False
    for script, text in ((data / "service" / name / "run", run), (data / "service" / name / "log" / "run", log_run(name))):
        if not (keep and os.path.lexists(script)):  # whatever is there (even a link) is the CT's: left alone
            write_atomic(script, text.encode(), 0o755, under=data, make_parents=True)
            wrote = True
    return wrote


def log_run(name: str) -> str:
    """daemontools' way to keep a service's output: a `log` service reading its stdout.
    Without one the output goes to svscan's console, which nobody drains in a CT:
    once that buffer is full the service blocks on its next write."""
    return f"#!/bin/sh\n{PATH}exec multilog t s1000000 n5 /data/log/{name}\n"
