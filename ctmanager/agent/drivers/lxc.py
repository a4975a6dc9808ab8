"""LXC driver: CTs named by CTID in the agent's own lxcpath.

Facts: `lxc-ls -P PATH -f -F NAME,STATE` (parsed by `parse_ls`).
Operations: lxc-create / lxc-start / lxc-stop, each only when the state differs;
`lxc-cgroup` sets a running CT's new limits (`cgroup_limits`: v1 or v2 keys,
whichever hierarchy this HN mounts).

Destroy does NOT call lxc-destroy: for a `dir:` rootfs it deletes the rootfs
directory recursively, and every CT's rootfs is the one shared read-only
prototype (checked on LXC 5.0: lxc-destroy removed the whole prototype). The
CT's own folder in lxcpath (config, logs) is all that belongs to it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ...dc.model import Paths, Resources
from ...monitoring.metrics import cgroup_version  # one rule for the layout: the limits and the metrics
from ...validate import is_digits
from ...wire.spec import Spec
from .base import OPST_DOWN, OPST_UP, DriverError, Runner, failed, render_ct_files, run

# LXC states -> OPST. A CT that is starting or frozen holds its /data: UP.
STATES = {
    "RUNNING": OPST_UP, "STARTING": OPST_UP, "FROZEN": OPST_UP, "FREEZING": OPST_UP, "THAWED": OPST_UP,
    "STOPPED": OPST_DOWN, "STOPPING": OPST_DOWN, "ABORTING": OPST_DOWN,
}
START_TIMEOUT = 10.0
CGROUP_ROOT = Path("/sys/fs/cgroup")
CFS_PERIOD = 100_000  # us; cpulimit is a percentage of one CPU per period, as in config.j2


def ls_argv(lxcpath: str) -> list[str]:
    return ["lxc-ls", "-P", lxcpath, "-f", "-F", "NAME,STATE"]


def parse_ls(out: str) -> dict[int, str]:
    """`lxc-ls -f -F NAME,STATE` -> {CTID: OPST}. Containers not named by a
    CTID are not ours (an lxcpath may be shared) and are skipped."""
    result: dict[int, str] = {}
    lines = out.splitlines()
    if not lines:
        return result
    if lines[0].split()[:2] != ["NAME", "STATE"]:
        raise DriverError(f"lxc-ls printed an unexpected header: {lines[0][:80]!r}")
    for line in lines[1:]:
        parts = line.split()
        if len(parts) < 2 or not is_digits(parts[0]):
            continue
        state = STATES.get(parts[1])
        if state is None:
            raise DriverError(f"lxc-ls: CT {parts[0]} is in an unknown state {parts[1][:20]!r}")
        result[int(parts[0])] = state
    return result


def cgroup_limits(r: Resources, version: int) -> list[tuple[str, str]]:
    """The `lxc-cgroup` (key, value) pairs that apply `r` to a running CT.

    v1 sets exactly what the CT's config (templates/ct/lxc/config.j2) sets at start,
    so a CT changed live and one started afresh get the same limits: no swap limit
    (memory.memsw needs swap accounting, often off) and no cpuset. v2 also limits
    swap; cpu.weight follows systemd's mapping of shares (1024 shares = weight 100)."""
    quota = str(r.cpulimit * CFS_PERIOD // 100)
    if version == 2:
        weight = min(max(round(r.cpuunits * 100 / 1024), 1), 10_000)
        return [("memory.max", str(r.memory)), ("memory.swap.max", str(r.swap)),
                ("cpu.max", f"{quota} {CFS_PERIOD}"), ("cpu.weight", str(weight))]
    return [("memory.limit_in_bytes", str(r.memory)), ("cpu.shares", str(r.cpuunits)),
            ("cpu.cfs_period_us", str(CFS_PERIOD)), ("cpu.cfs_quota_us", quota)]


LIVE = {1: ("memory", "cpuunits", "cpulimit"), 2: ("memory", "swap", "cpuunits", "cpulimit")}


class LxcDriver:
    name = "lxc"

    def __init__(self, lxcpath: str, paths: Paths, runner: Runner = run, cgroup_root: Path = CGROUP_ROOT) -> None:
        self.lxcpath = lxcpath
        self.paths = paths
        self.run = runner
        self.cgroup_root = cgroup_root

    def _ct(self, ctid: int) -> list[str]:
        return ["-P", self.lxcpath, "-n", str(ctid)]

    def config_path(self, ctid: int) -> Path:
        return Path(self.lxcpath) / str(ctid) / "config"

    # ---- facts -----------------------------------------------------------
    def observe(self) -> dict[int, str]:
        c = self.run(ls_argv(self.lxcpath), 10.0)
        if c.rc != 0:
            raise failed(c, "cannot list CTs", temporary=True)
        return parse_ls(c.out)

    def watch_argv(self) -> list[str] | None:
        return ["lxc-monitor", "-P", self.lxcpath, "-n", ".*"]

    # ---- operations ------------------------------------------------------
    def create(self, spec: Spec) -> bool:
        Path(self.lxcpath).mkdir(parents=True, exist_ok=True)
        conf = self.config_path(spec.ct.ctid)
        if not conf.exists():
            # lxc-create with the `none` template only registers the CT; the
            # config is then written from the spec like on every later change.
            c = self.run(["lxc-create", *self._ct(spec.ct.ctid), "-t", "none"], 30.0)
            if c.rc != 0 and not conf.parent.is_dir():
                raise failed(c, f"cannot create CT {spec.ct.ctid}")
        return render_ct_files(spec, self.paths, {"ct/lxc/config.j2": (conf, 0o644)})

    def start(self, ctid: int) -> None:
        if not self.config_path(ctid).exists():
            raise DriverError(f"CT {ctid} has no config on this HN; create it first", refused=True)
        if self.state(ctid) == OPST_UP:
            return
        log = Path(self.lxcpath) / str(ctid) / "start.log"
        log.unlink(missing_ok=True)
        c = self.run(["lxc-start", *self._ct(ctid), "-o", str(log), "-l", "ERROR"], START_TIMEOUT)
        if c.rc != 0:
            why = _first_error(log) or f"lxc-start exited {c.rc}"
            raise DriverError(f"cannot start CT {ctid}: {why}", refused=True)
        c = self.run(["lxc-wait", *self._ct(ctid), "-s", "RUNNING", "-t", str(int(START_TIMEOUT))], START_TIMEOUT + 2)
        if c.rc != 0:
            raise failed(c, f"CT {ctid} did not reach RUNNING", refused=True)

    def stop(self, ctid: int) -> None:
        if self.state(ctid) != OPST_UP:
            return
        # -k: kill at once. The CT's init is svscan, which has no halt handler, so
        # a clean halt request would only wait for its timeout and then kill anyway.
        c = self.run(["lxc-stop", *self._ct(ctid), "-k"], 30.0)
        if c.rc != 0 and self.state(ctid) == OPST_UP:
            raise failed(c, f"cannot stop CT {ctid}")

    def destroy(self, ctid: int) -> None:
        self.stop(ctid)
        folder = Path(self.lxcpath) / str(ctid)
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
        resolv = Path(self.paths.config) / str(ctid)
        if resolv.is_dir():
            shutil.rmtree(resolv)

    def set_limits(self, spec: Spec) -> tuple[str, ...]:
        ctid = spec.ct.ctid
        version = cgroup_version(self.cgroup_root)
        for key, value in cgroup_limits(spec.ct.resources, version):
            c = self.run(["lxc-cgroup", *self._ct(ctid), key, value], 10.0)
            if c.rc != 0:
                raise failed(c, f"cannot set {key} of CT {ctid} to {value}")
        return LIVE[version]

    def exec_argv(self, ctid: int, argv: list[str]) -> list[str]:
        return ["lxc-attach", *self._ct(ctid), "--clear-env", "--", *argv]

    def state(self, ctid: int) -> str | None:
        return self.observe().get(ctid)


def _first_error(log: Path) -> str:
    """lxc-start's own message is only "see the log". The log's first ERROR line is
    the cause; the later ones are its consequences and the tool's "see the log"."""
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines()
                 if " ERROR " in ln and "tools/lxc_start.c" not in ln]
    except OSError:
        return ""
    # "lxc NAME TIME ERROR    module - src/file.c:func:line - message"
    return lines[0].split(" - ", 2)[-1].strip()[:300] if lines else ""
