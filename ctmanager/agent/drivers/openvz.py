"""OpenVZ (legacy vzctl) driver. No OpenVZ kernel runs here, so its commands and
parsers are tested as text against captured `vzlist -a -j` output and vzctl
exit codes; the config files are the same templates `ctmanager render` writes.

Facts: `vzlist -a -j` (JSON array: ctid, status running|stopped|mounted|suspended).
Operations: `vzctl start|stop|destroy CTID`, exit codes mapped below; `vzctl set
CTID --ram .. --save` for a running CT's new limits.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...dc.model import Paths
from ...render import ctfiles
from ...validate import vz_size
from ...wire.spec import Spec
from .base import OPST_DOWN, OPST_UP, Completed, DriverError, Runner, failed, render_ct_files, run

CONF_DIR = "/etc/vz/conf"
STATUS = {"running": OPST_UP, "suspended": OPST_UP, "stopped": OPST_DOWN, "mounted": OPST_DOWN}

# vzctl exit codes (vzctl(8)): what each means for us.
OK_ALREADY = {"start": 32, "stop": 31}  # already running / not running: the goal holds
TEMPORARY = {9: "CT is locked by another vzctl"}
REFUSED = {14: "CT config not found", 46: "not enough disk space", 78: "IP address already in use"}
FAILED = {79: "mount/umount action script failed"}


def parse_vzlist(out: str) -> dict[int, str]:
    try:
        rows = json.loads(out)
    except ValueError as exc:
        raise DriverError(f"vzlist printed no JSON: {exc}") from None
    if not isinstance(rows, list):
        raise DriverError("vzlist -j: expected a JSON array")
    result: dict[int, str] = {}
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("ctid"), int):
            raise DriverError(f"vzlist -j: unexpected entry {str(row)[:80]!r}")
        state = STATUS.get(str(row.get("status")))
        if state is None:
            raise DriverError(f"vzlist: CT {row['ctid']} has an unknown status {str(row.get('status'))[:20]!r}")
        result[row["ctid"]] = state
    return result


def set_argv(spec: Spec) -> list[str]:
    """`vzctl set` with the spec's limits, the same values ctid.conf.j2 writes.
    --save keeps them in the CT's config too; `create` then rewrites that file
    from the template (same values, our layout)."""
    r = spec.ct.resources
    hard, inodes, inodes_hard = ctfiles.disk_limits(r.disk)
    return ["vzctl", "set", str(spec.ct.ctid), "--ram", vz_size(r.memory), "--swap", vz_size(r.swap),
            "--diskspace", f"{vz_size(r.disk)}:{vz_size(hard)}", "--diskinodes", f"{inodes}:{inodes_hard}",
            "--cpus", str(r.cpus), "--cpuunits", str(r.cpuunits), "--cpulimit", str(r.cpulimit), "--save"]


def check(c: Completed, action: str, ctid: int) -> None:
    """Map a vzctl exit code to success or a typed DriverError."""
    if c.rc == 0 or c.rc == OK_ALREADY.get(action):
        return
    what = f"cannot {action} CT {ctid}"
    if c.rc in TEMPORARY:
        raise DriverError(f"{what}: {TEMPORARY[c.rc]} (vzctl exit {c.rc})", temporary=True)
    if c.rc in REFUSED:
        raise DriverError(f"{what}: {REFUSED[c.rc]} (vzctl exit {c.rc})", refused=True)
    if c.rc in FAILED:
        raise DriverError(f"{what}: {FAILED[c.rc]} (vzctl exit {c.rc})")
    raise failed(c, what)


class OpenVzDriver:
    name = "openvz"

    def __init__(self, paths: Paths, runner: Runner = run, conf_dir: str = CONF_DIR) -> None:
        self.paths = paths
        self.run = runner
        self.conf_dir = Path(conf_dir)

    def observe(self) -> dict[int, str]:
        c = self.run(["vzlist", "-a", "-j"], 10.0)
        if c.rc != 0:
            raise failed(c, "cannot list CTs", temporary=True)
        return parse_vzlist(c.out)

    def watch_argv(self) -> list[str] | None:
        return None  # vzctl has no event stream: the agent polls

    def create(self, spec: Spec) -> bool:
        ctid = spec.ct.ctid
        return render_ct_files(spec, self.paths, {
            "ct/openvz/ctid.conf.j2": (self.conf_dir / f"{ctid}.conf", 0o644),
            "ct/openvz/ctid.mount.j2": (self.conf_dir / f"{ctid}.mount", 0o755),
            "ct/openvz/ctid.umount.j2": (self.conf_dir / f"{ctid}.umount", 0o755),
        })

    def start(self, ctid: int) -> None:
        check(self.run(["vzctl", "start", str(ctid)], 60.0), "start", ctid)

    def stop(self, ctid: int) -> None:
        check(self.run(["vzctl", "stop", str(ctid)], 120.0), "stop", ctid)

    def destroy(self, ctid: int) -> None:
        self.stop(ctid)
        # vzctl destroy removes VE_PRIVATE (an empty per-CT folder here) and the
        # config; /data lives on the storage node and is untouched. 14 = already gone.
        c = self.run(["vzctl", "destroy", str(ctid)], 120.0)
        if c.rc != 14:
            check(c, "destroy", ctid)
        for suffix in ("mount", "umount"):
            (self.conf_dir / f"{ctid}.{suffix}").unlink(missing_ok=True)

    def set_limits(self, spec: Spec) -> tuple[str, ...]:
        check(self.run(set_argv(spec), 60.0), "set", spec.ct.ctid)
        return ("memory", "swap", "disk", "cpus", "cpuunits", "cpulimit")

    def exec_argv(self, ctid: int, argv: list[str]) -> list[str]:
        return ["vzctl", "exec2", str(ctid), *argv]  # exec2: passes the command's exit code through
