"""The Debian package, installed the way an ops team installs it: scripts/build-deb
builds it from this checkout, then `apt install ./ctmanager_*.deb` puts it into a
clean Debian 12 root (debootstrap minbase, in a chroot) where only Debian's own
packages are reachable, and it runs there with Debian's python3: `--version`,
`--help`, `init example` + `status`, the units verified by systemd, and
`apt remove` leaves the DC's files alone."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from labrack import ROOT

SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
CACHE = ROOT / "vagrant" / ".boxes" / "debs"  # debootstrap's downloads, shared with the box build
UNITS = ("ctmanager.service", "ctagent.service", "ctmailmap.service", "ctbackup.service")


def run(*argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"})
    assert p.returncode == 0, f"{' '.join(argv)} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    built = run(str(ROOT / "scripts" / "build-deb"), "--out", str(out)).stdout.strip().splitlines()[-1]
    return Path(built)


@pytest.fixture(scope="module")
def debian(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A clean Debian 12 root (minbase) with /proc and the host's resolver, for a chroot."""
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        pytest.skip("a Debian root needs root and debootstrap (bash vagrant/host-setup --packages-only)")
    root = tmp_path_factory.mktemp("debian12") / "root"
    CACHE.mkdir(parents=True, exist_ok=True)
    run("debootstrap", "--variant=minbase", f"--cache-dir={CACHE}", SUITE, str(root), MIRROR)
    shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
    run("mount", "-t", "proc", "proc", str(root / "proc"))
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root / "proc")], check=False)


def chroot(root: Path, *argv: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    argv = ("chroot", str(root), *argv)
    if check:
        return run(*argv, timeout=timeout)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env={**os.environ, "LC_ALL": "C.UTF-8"})


@pytest.fixture(scope="module")
def installed(deb: Path, debian: Path) -> Path:
    shutil.copy(deb, debian / "tmp" / deb.name)
    chroot(debian, "apt-get", "update", "-qq")
    # every real Debian 12 machine has systemd (minbase has not): `systemd-analyze --root` verifies against it
    chroot(debian, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "systemd", "man-db")
    # as the README says, but without recommends (lxc, borgbackup: a machine's role picks them)
    chroot(debian, "apt-get", "install", "-y", "-qq", "--no-install-recommends", f"/tmp/{deb.name}")
    return debian


def test_the_package_is_built_with_what_an_install_needs(deb: Path) -> None:
    info = run("dpkg-deb", "--field", str(deb), "Package", "Version", "Architecture", "Depends").stdout
    assert "Package: ctmanager" in info and "python3.11" in info and "libpq5" in info
    files = run("dpkg-deb", "--contents", str(deb)).stdout
    for path in ("./usr/bin/ctmanager -> /opt/ctmanager/bin/ctmanager", "./lib/systemd/system/ctagent.service",
                 "./usr/share/ctmanager/templates/dc/example.toml", "./etc/ctmanager/manager.toml.example",
                 "./usr/share/man/man1/ctmanager.1.gz", "./usr/share/bash-completion/completions/ctmanager",
                 "./opt/ctmanager/bin/python3.11 -> /usr/bin/python3.11"):
        assert path in files, path
    assert "psycopg_binary" not in files  # Debian's libpq5, which its security updates reach
    control = run("dpkg-deb", "--info", str(deb)).stdout
    assert all(f" {script} " in control for script in ("postinst", "prerm", "postrm"))


def test_it_installs_on_a_clean_debian_12_and_runs_with_debian_s_python(installed: Path) -> None:
    assert chroot(installed, "ctmanager", "--version").stdout.strip().startswith("ctmanager ")
    assert "usage: ctagent" in chroot(installed, "ctagent", "--help").stdout
    shebang = (installed / "opt/ctmanager/bin/ctmanager").read_text().splitlines()[0]
    assert shebang == "#!/opt/ctmanager/bin/python"  # the venv, on Debian's own python3.11
    assert os.readlink(installed / "opt/ctmanager/bin/python3.11") == "/usr/bin/python3.11"
    leftover = subprocess.run(["grep", "-rlI", "/tmp/ctmanager-deb.", str(installed / "opt/ctmanager")],
                              capture_output=True, text=True)
    assert leftover.stdout == "", leftover.stdout  # no path of the build machine left in the venv
    chroot(installed, "ctmanager", "--store", "/var/lib/ctmanager/dc.db", "init", "example")
    status = chroot(installed, "ctmanager", "--store", "/var/lib/ctmanager/dc.db", "status").stdout
    assert "acme" in status and "mailstore-101-1" in status
    bad = chroot(installed, "ctmanager", "--store", "/var/lib/ctmanager/dc.db", "ct", "add", "Bad_Name",
                 "--rack", "101", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    user = chroot(installed, "getent", "passwd", "ctmanager").stdout
    assert "/var/lib/ctmanager" in user and "nologin" in user
    assert chroot(installed, "man", "-w", "ctmanager").stdout.strip() == "/usr/share/man/man1/ctmanager.1.gz"


def test_systemd_accepts_the_installed_units(installed: Path) -> None:
    for unit in UNITS:
        path = installed / "lib/systemd/system" / unit
        exec_start = next(line for line in path.read_text().splitlines() if line.startswith("ExecStart="))
        binary = exec_start.split("=", 1)[1].split()[0].lstrip("-@:+!")
        assert chroot(installed, "test", "-x", binary, check=False).returncode == 0, f"{unit}: no {binary} installed"
        p = subprocess.run(["systemd-analyze", f"--root={installed}", "verify", f"/lib/systemd/system/{unit}"],
                           capture_output=True, text=True, timeout=120)
        # verify reports every problem on stderr; a unit it cannot load or whose ExecStart it cannot find fails
        assert p.returncode == 0, f"{unit}: {p.stderr}"


def test_apt_remove_leaves_the_dcs_files_alone(installed: Path) -> None:
    key = installed / "etc/ctmanager/rack-101.key"
    key.write_text("00" * 32 + "\n")
    key.chmod(0o600)
    config = installed / "etc/ctmanager/manager.toml"
    config.write_text((installed / "etc/ctmanager/manager.toml.example").read_text())
    store = installed / "var/lib/ctmanager/dc.db"
    if not store.exists():
        chroot(installed, "ctmanager", "--store", "/var/lib/ctmanager/dc.db", "init", "example")
    before = store.read_bytes()
    chroot(installed, "apt-get", "remove", "-y", "-qq", "ctmanager")
    assert not (installed / "usr/bin/ctmanager").exists() and not (installed / "opt/ctmanager/bin").exists()
    assert key.read_text() == "00" * 32 + "\n" and config.is_file() and store.read_bytes() == before
    chroot(installed, "apt-get", "purge", "-y", "-qq", "ctmanager")  # not even a purge takes the DC's files
    assert key.is_file() and config.is_file() and store.read_bytes() == before
    assert chroot(installed, "getent", "passwd", "ctmanager").returncode == 0
