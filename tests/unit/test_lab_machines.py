"""What `lab machine hn` decides from a machine's /proc (captured from a Vagrant HN)."""

from __future__ import annotations

from ctmanager.lab.machines import missing_controllers

# /proc/self/cgroup and the cgroup lines of /proc/self/mounts on a vagrant-lxc HN here:
# cpu and cpuacct are separate hierarchies, but systemd only made a cpu,cpuacct folder
CGROUP = """9:name=systemd:/system.slice/ssh.service
8:pids:/system.slice/ssh.service
7:blkio:/
6:freezer:/
5:devices:/system.slice/ssh.service
4:memory:/system.slice/ssh.service
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/system.slice/ssh.service
"""
MOUNTS = """tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,size=4096k,nr_inodes=1024,mode=755 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,nosuid,nodev,noexec,relatime,name=systemd 0 0
cgroup /sys/fs/cgroup/freezer cgroup rw,nosuid,nodev,noexec,relatime,freezer 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,nosuid,nodev,noexec,relatime,pids 0 0
cgroup /sys/fs/cgroup/blkio cgroup rw,nosuid,nodev,noexec,relatime,blkio 0 0
cgroup /sys/fs/cgroup/devices cgroup rw,nosuid,nodev,noexec,relatime,devices 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,nosuid,nodev,noexec,relatime,cpuset 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0
"""


def test_the_unmounted_controllers_are_found() -> None:
    assert missing_controllers(CGROUP, MOUNTS) == ["cpuacct", "cpu"]


def test_nothing_to_do_once_mounted() -> None:
    mounts = MOUNTS + "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\ncgroup /sys/fs/cgroup/cpuacct cgroup rw,cpuacct 0 0\n"
    assert missing_controllers(CGROUP, mounts) == []


def test_joined_controllers_and_pure_cgroup2_need_nothing() -> None:
    joined = "2:cpu,cpuacct:/\n1:name=systemd:/\n0::/\n"
    assert missing_controllers(joined, "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n") == []
    assert missing_controllers("0::/init.scope\n", "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n") == []
