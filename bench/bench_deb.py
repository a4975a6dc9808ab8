#!/usr/bin/env python3
"""The Debian package (issue 36): how big, how long to install on a clean root,
and how fast a command starts from it. Not a test: prints figures and appends
them to bench/RESULTS.md with the machine noted.

  - the .deb's size and its installed size (dpkg's Installed-Size);
  - scripts/build-deb, wall time (pip's cache warm after the first build);
  - `apt-get install --no-install-recommends ./ctmanager_*.deb` on a clean
    Debian 12 root (debootstrap minbase, chroot): with its Debian dependencies
    fetched from the mirror, and again as a reinstall (the package alone:
    unpack + postinst);
  - `ctmanager status` on the example DC, whole process: from the package
    (chroot, Debian's python3.11) against the source venv (.venv, this
    machine's python), alternating in the same run; target: the package no
    slower than 1.2x the venv (its byte code is compiled at build time).

Usage: python bench/bench_deb.py [--samples N] [--no-record] [--smoke]
(needs root and debootstrap; --smoke: 3 samples)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, emit, parse_args  # noqa: E402

CACHE = ROOT / "vagrant" / ".boxes" / "debs"
ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"}


def run(*argv: str) -> float:
    """Seconds `argv` took; a failure ends the benchmark with its output."""
    t = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return time.perf_counter() - t


def row(name: str, values: list[float], unit: str, target: str = "-", met: str = "-") -> list[str]:
    fmt = (lambda x: f"{x:.2f} {unit}") if unit else (lambda x: f"{x:.2f}x")
    return [name, fmt(min(values)), fmt(statistics.median(values)), target, met]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=15, help="ctmanager status runs per side")
    args = parse_args(ap, argv, samples=3)
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        raise SystemExit("bench_deb needs root and debootstrap (bash vagrant/host-setup --packages-only)")
    base = Path(tempfile.mkdtemp(prefix="ctm-bench-deb-"))
    root = base / "root"
    try:
        out = base / "dist"
        build_s = run(str(ROOT / "scripts" / "build-deb"), "--out", str(out))
        deb = next(out.glob("ctmanager_*.deb"))
        size_mb = deb.stat().st_size / 1e6
        installed_kb = int(subprocess.run(["dpkg-deb", "--field", str(deb), "Installed-Size"], capture_output=True,
                                          text=True, check=True).stdout.strip())
        CACHE.mkdir(parents=True, exist_ok=True)
        run("debootstrap", "--variant=minbase", f"--cache-dir={CACHE}", "bookworm", str(root),
            "http://deb.debian.org/debian")
        shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
        shutil.copy(deb, root / "tmp" / deb.name)
        run("chroot", str(root), "apt-get", "update", "-qq")
        fresh_s = run("chroot", str(root), "apt-get", "install", "-y", "-qq", "--no-install-recommends",
                      f"/tmp/{deb.name}")
        again_s = run("chroot", str(root), "apt-get", "install", "-y", "-qq", "--reinstall", f"/tmp/{deb.name}")
        run("chroot", str(root), "ctmanager", "--store", "/tmp/dc.db", "init", "example")
        shutil.copy(root / "tmp" / "dc.db", base / "dc.db")
        package = ["chroot", str(root), "ctmanager", "--store", "/tmp/dc.db", "status"]
        venv = [str(ROOT / ".venv" / "bin" / "ctmanager"), "--store", str(base / "dc.db"), "status"]
        run(*package), run(*venv)  # warm the page cache for both
        pkg_s, venv_s = [], []
        for _ in range(args.samples):  # alternating: the machine's noise falls on both
            pkg_s.append(run(*package))
            venv_s.append(run(*venv))
        ratios = [p / v for p, v in zip(pkg_s, venv_s)]
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)
    ratio = statistics.median(ratios)
    rows = [
        [".deb size", f"{size_mb:.1f} MB", f"{size_mb:.1f} MB", "-", "-"],
        ["installed size", f"{installed_kb / 1024:.0f} MiB", f"{installed_kb / 1024:.0f} MiB", "-", "-"],
        row("scripts/build-deb", [build_s], "s"),
        row("apt install on a clean root (with Debian deps from the mirror)", [fresh_s], "s"),
        row("apt install --reinstall (the package alone)", [again_s], "s"),
        row("ctmanager status, package (chroot, Debian python3.11)", pkg_s, "s"),
        row("ctmanager status, source venv", venv_s, "s"),
        row("package / venv (same run, alternating)", ratios, "", "<= 1.2x", "yes" if ratio <= 1.2 else "NO"),
    ]
    emit("bench_deb: the Debian package", [
        f"{args.samples} alternating runs of `ctmanager status` on the example DC each side; the venv runs "
        f"{sys.version.split()[0]} (this machine's python), the package Debian's python3.11.", ""],
        rows, record=not args.no_record, smoke=args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
