"""The Vagrant rack's pieces that CI can afford on every run: the Vagrantfile
validates for both providers, its addresses are the example DC's, and the box
really builds from debootstrap in the shape vagrant-lxc unpacks. (The whole rack
coming up with the suite run against it is `vagrant/run-tests`; see README.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from labrack import ROOT

VAGRANT = ROOT / "vagrant"


def vagrant(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    if not shutil.which("vagrant"):
        pytest.skip("vagrant is not installed (bash vagrant/host-setup)")
    return subprocess.run(["vagrant", *args], cwd=VAGRANT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("provider", ["lxc", "libvirt"])
def test_the_vagrantfile_validates(provider: str) -> None:
    # libvirt shares the rack folder over NFS from the host; this host has no nfsd,
    # so its validation uses rsync shares (the rest of the config is the same)
    p = vagrant("validate", env={"CTMANAGER_PROVIDER": provider, "CTMANAGER_LIBVIRT_SHARE": "rsync"})
    assert p.returncode == 0 and "validated successfully" in p.stdout, p.stdout + p.stderr


def test_an_unknown_provider_is_refused() -> None:
    p = vagrant("validate", env={"CTMANAGER_PROVIDER": "virtualbox"})
    assert p.returncode != 0 and "CTMANAGER_PROVIDER must be lxc or libvirt" in p.stdout + p.stderr


def test_the_machines_have_the_example_dcs_addresses_in_both_racks(tmp_path: Path) -> None:
    from ctmanager.dc import manifest
    from ctmanager.operations import inventory
    from ctmanager.store import open_store, queries

    with open_store(tmp_path / "ctm.db", create=True) as store:
        with store.transaction():
            dc = inventory.init(store, ROOT / "templates" / "dc" / "example.toml")
            inv = inventory.Inventory(store, dc)
            inv.install_rack(102, manifest.load(ROOT / "templates/dc/manifests/rack-102.toml", dc), "rack-102")
        nodes = {n.hostname: (n.ip, n.rack) for n in queries.nodes(store)}
    text = (VAGRANT / "Vagrantfile").read_text()
    machines = {name: (ip, int(slot)) for name, ip, slot in
                re.findall(r'"([a-z0-9-]+)"\s*=>\s*\["[a-z]+", "(\d+\.\d+\.\d+\.\d+)", (\d+)\]', text)}
    assert {name: machines.get(name) for name in nodes} == nodes  # every HN and storage node, in its rack
    assert {slot for _, slot in machines.values()} == {101, 102}
    # each rack network is the slot's /16 (the DNS machine's address is in rack-101's)
    assert re.search(r"PREFIX = 16\b", text) and re.search(r'DNS_IP = "10\.101\.', text) and dc.name
    assert re.search(r'INSTALL = "102 201"', text)  # rack-201: another realm, for the move's refusal


def test_the_box_builds_in_the_shape_vagrant_lxc_unpacks(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        pytest.skip("building the box needs root and debootstrap (bash vagrant/host-setup)")
    cache = VAGRANT / ".boxes" / "debs"  # kept between runs: a rebuild downloads nothing
    cache.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([str(VAGRANT / "build-box"), "--force", "--no-add", "--out", str(tmp_path), "--cache",
                        str(cache)], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    box = tmp_path / "debian12-lxc.box"
    with tarfile.open(box) as outer:
        assert sorted(outer.getnames()) == ["lxc-config", "metadata.json", "rootfs.tar.gz"]
        assert json.load(outer.extractfile("metadata.json"))["provider"] == "lxc"
        assert "lxc.include" in outer.extractfile("lxc-config").read().decode()
        outer.extract("rootfs.tar.gz", tmp_path, filter="data")
    with tarfile.open(tmp_path / "rootfs.tar.gz") as rootfs:
        names = rootfs.getnames()
        assert all(n == "./rootfs" or n.startswith("./rootfs/") for n in names)  # vagrant-lxc strips two
        members = set(names)

        def read(name: str) -> str:
            return rootfs.extractfile(f"./rootfs/{name}").read().decode()

        assert read("home/vagrant/.ssh/authorized_keys") == next(
            Path("/usr/share/rubygems-integration/all/gems").glob("vagrant-*/keys/vagrant.pub")).read_text()
        assert "NOPASSWD:ALL" in read("etc/sudoers.d/vagrant")
        assert "iface eth0 inet dhcp" in read("etc/network/interfaces")
        for needed in ("./rootfs/usr/sbin/sshd", "./rootfs/usr/bin/sudo", "./rootfs/usr/sbin/init"):  # usr-merged
            assert needed in members, needed
        assert not [n for n in names if n.startswith("./rootfs/etc/ssh/ssh_host_")]  # each machine makes its own
