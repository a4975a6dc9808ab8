"""The "init" of one lab HN, started with `ip netns exec NS python -m ctmanager.lab.hn_init`.

`ip netns exec` remounts /sys, and the cgroup v1 hierarchies vanish from its
mount namespace; LXC then fails with "Failed to setup cgroup limits". So first
mount a tmpfs on /sys/fs/cgroup and every v1 controller again (FIELD-NOTES),
then run sshd and ctagent as children in that mount namespace. SIGTERM stops
both. CTs are not our children (lxc-start daemonizes), so they outlive an
agent restart, as on a real HN.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

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


def main(argv: list[str]) -> int:
    sshd_config, ctagent, agent_config = argv
    mount_cgroups()
    children = [
        subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", sshd_config]),
        subprocess.Popen([ctagent, "-c", agent_config, "run"]),
    ]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        for i, child in enumerate(children):
            if child.poll() is not None:
                sys.stderr.write(f"hn_init: {child.args[0]} exited {child.returncode}; restarting it\n")
                time.sleep(0.5)
                children[i] = subprocess.Popen(child.args)
        time.sleep(0.2)
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
