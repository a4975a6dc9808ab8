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


def test_a_machines_inventory_reaches_every_hn_storage_node_and_manager_through_its_console(tmp_path) -> None:
    """What the suite on one rack's manager machine reads of another rack: consoles
    (SSH, pinned keys) for HNs, storage nodes and managers; the config in the shared folder."""
    import tomllib

    from ctmanager.dc.model import Node
    from ctmanager.lab import layout

    lab = layout.Lab(str(tmp_path / "root"))
    hn = Node("hn-102-1", 102, 1, "compute", "compute", "S1", "52:54:00:66:01:01", "10.102.1.1")
    st = Node("storage-102-3", 102, 3, "storage", "storage", "S3", "52:54:00:66:01:03", "10.102.1.3")
    config = tmp_path / "root/shared/managers/manager-102.toml"
    consoles = {"hn-102-1": "10.0.3.11", "storage-102-3": "10.0.3.13", "manager-102": "10.0.3.12"}
    text = layout.machines_inventory_toml(lab, "postgresql://u:p@10.101.1.4/ctmanager", 102, config, [hn], [st],
                                          [("manager-102", config)], consoles, tmp_path / "console_known")
    inv = tomllib.loads(text)
    assert inv["rack"] == "rack-102" and inv["manager_config"] == str(config)
    for entry, ip in ((inv["hns"][0], "10.0.3.11"), (inv["storage"][0], "10.0.3.13"), (inv["managers"][0], "10.0.3.12")):
        console = entry["console"]
        assert console[0] == "ssh" and console[-1] == f"root@{ip}"
        assert f"UserKnownHostsFile={tmp_path / 'console_known'}" in console and "StrictHostKeyChecking=yes" in console
    assert inv["storage"][0]["data"] == str(lab.root / "data" / "storage-102-3")
    assert inv["managers"][0]["config"] == str(config) and "log" in inv["managers"][0]
    # the agent is agents/ctagent.service: its config where the unit reads it; the tests'
    # console is a key of its own (the manager's is gated on the HNs)
    assert inv["hns"][0]["agent_config"] == "/etc/ctagent/ctagent.toml"
    assert all(str(lab.console_key) in e["console"] for e in (inv["hns"][0], inv["storage"][0], inv["managers"][0]))
    assert inv["ssh_key"] == str(lab.ssh_key) != str(lab.console_key)
    assert "ctmanager.service" in inv["faults"]["kill_manager"]
    assert "ctagent.service" in inv["faults"]["kill_agent"] and "ctagent.service" in inv["faults"]["heal"]
