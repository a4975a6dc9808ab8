"""The "init" of one lab HN, started with `ip netns exec NS python -m ctmanager.lab.hn_init`.

`ip netns exec` remounts /sys, and the cgroup v1 hierarchies vanish from its
mount namespace; LXC then fails with "Failed to setup cgroup limits". So first
mount a tmpfs on /sys/fs/cgroup and every v1 controller again (FIELD-NOTES),
then run sshd and ctagent as children in that mount namespace. SIGTERM stops
both. CTs are not our children (lxc-start daemonizes), so they outlive an
agent restart, as on a real HN.

It is also the HN's watchdog: the agent pets a FIFO (its `fencing.watchdog`);
when no pet came for `watchdog_timeout`, this does what a node reset does to
the CTs and the agent: kills them (the node then stays "off": the agent is not
restarted until `ctmanager lab fault heal HN` removes the `agent.down` flag,
which `lab fault kill-agent` sets too).

On a machine of its own (lab/machines.py) the agent is the deploy files'
ctagent.service and this runs as `hn_init --watchdog AGENT_CONFIG`: the watchdog
only, whose reset kills the agent, stops its unit (no restart until `heal` starts
it) and kills the CTs.
"""

from __future__ import annotations

import os
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..files import write_atomic
from ..validate import is_digits

CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")


def mount_cgroups() -> None:
    def mount(*argv: str) -> None:
        subprocess.run(["mount", *argv], check=True)

    mount("-t", "tmpfs", "cgroup", "/sys/fs/cgroup")
    for c in CONTROLLERS:
        os.makedirs(f"/sys/fs/cgroup/{c}", exist_ok=True)
        mount("-t", "cgroup", "-o", c, "cgroup", f"/sys/fs/cgroup/{c}")
    os.makedirs("/sys/fs/cgroup/systemd", exist_ok=True)
    mount("-t", "cgroup", "-o", "none,name=systemd", "cgroup", "/sys/fs/cgroup/systemd")


class LabWatchdog(threading.Thread):
    def __init__(self, fifo: Path, timeout: float, fire: Callable[[float], None]) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.fifo, self.timeout, self.fire = fifo, timeout, fire

    def run(self) -> None:
        if self.fifo.exists() and not stat.S_ISFIFO(self.fifo.stat().st_mode):
            self.fifo.unlink()
        if not self.fifo.exists():
            os.mkfifo(self.fifo, 0o600)
        fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        keep = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)  # so the FIFO never reads as EOF
        armed, last = False, 0.0
        try:
            while True:
                ready, _, _ = select.select([fd], [], [], 0.1)
                now = time.monotonic()
                if ready:
                    data = os.read(fd, 4096)
                    if data.endswith(b"V"):
                        armed = False  # magic close: the agent stopped with nothing running
                    elif data:
                        armed, last = True, now
                if armed and now - last > self.timeout:
                    armed = False
                    self.fire(now - last)
        finally:
            os.close(fd)
            os.close(keep)


AGENT_UNIT = "ctagent.service"  # agents/ctagent.service, on a machine


def _kill_cts(lxcpath: Path) -> None:
    for ct in sorted(p.name for p in lxcpath.iterdir() if is_digits(p.name)) if lxcpath.is_dir() else ():
        subprocess.run(["lxc-stop", "-P", str(lxcpath), "-n", ct, "-k"], capture_output=True, timeout=30)


def _resetting(silent: float) -> None:
    sys.stderr.write(f"hn_init: WATCHDOG: not petted for {silent:.1f}s: resetting this HN "
                     "(its agent and CTs are killed; `ctmanager lab fault heal` powers it on)\n")


def watchdog_only(agent_config: str) -> int:
    """The lab watchdog beside the agent's own unit: a reset kills the agent (SIGKILL,
    then a stop, so systemd does not start it again) and its CTs."""
    from ..agent.config import load

    config = load(Path(agent_config))
    if config.watchdog == "none":
        sys.stderr.write(f"hn_init: {agent_config} has no watchdog: nothing to watch\n")
        return 1

    def reset(silent: float) -> None:
        _resetting(silent)
        subprocess.run(["systemctl", "kill", "--kill-whom=main", "-s", "KILL", AGENT_UNIT], timeout=30)
        subprocess.run(["systemctl", "stop", AGENT_UNIT], timeout=60)
        _kill_cts(Path(config.lxcpath))
        sys.stderr.write("hn_init: WATCHDOG: reset done\n")

    dog = LabWatchdog(Path(config.watchdog), config.timers.watchdog_timeout, reset)
    dog.run()  # until killed: systemd stops it
    return 0


def main(argv: list[str]) -> int:
    """`hn_init SSHD_CONFIG CTAGENT AGENT_CONFIG` in a lab namespace, or
    `hn_init --watchdog AGENT_CONFIG` on a machine of its own (its sshd, cgroups and
    agent unit are the system's: see lab/machines.py)."""
    from ..agent.config import load

    if argv[:1] == ["--watchdog"]:
        return watchdog_only(*argv[1:])
    sshd_config, ctagent, agent_config = argv
    config = load(Path(agent_config))
    hdir = Path(agent_config).parent
    down_flag, pid_file = hdir / "agent.down", hdir / "ctagent.pid"
    mount_cgroups()
    agent_argv = [ctagent, "-c", agent_config, "run"]
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", sshd_config])
    agent: subprocess.Popen[bytes] | None = None
    lock = threading.Lock()

    def reset(silent: float) -> None:
        """What a node reset does to the agent and the CTs."""
        _resetting(silent)
        down_flag.touch()
        with lock:
            if agent is not None and agent.poll() is None:
                agent.kill()
        _kill_cts(Path(config.lxcpath))
        sys.stderr.write("hn_init: WATCHDOG: reset done\n")

    if config.watchdog != "none":
        LabWatchdog(Path(config.watchdog), config.timers.watchdog_timeout, reset).start()
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        if sshd.poll() is not None:
            sys.stderr.write(f"hn_init: sshd exited {sshd.returncode}; restarting it\n")
            time.sleep(0.5)
            sshd = subprocess.Popen(sshd.args)
        with lock:
            if (agent is None or agent.poll() is not None) and not down_flag.exists():
                if agent is not None:
                    sys.stderr.write(f"hn_init: ctagent exited {agent.returncode}; restarting it\n")
                agent = subprocess.Popen(agent_argv)
                write_atomic(pid_file, f"{agent.pid}\n".encode(), 0o644)
        time.sleep(0.2)
    for child in (sshd, agent):
        if child is not None:
            child.terminate()
    for child in (sshd, agent):
        if child is None:
            continue
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
