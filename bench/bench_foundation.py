#!/usr/bin/env python3
"""Foundation benchmarks (issue: foundation). Not a test: prints figures and
appends them to bench/RESULTS.md with the machine noted.

  - render every config of a DC of 16 racks x 40 HNs x 10,000 CTs (target <= 1.0 s),
    then again with nothing changed (target <= 0.3 s);
  - `ctmanager status --json` on 10,000 CTs, whole process (target <= 0.5 s).

Usage: python bench/bench_foundation.py [--repeat N] [--racks 16 --hns 40 --cts 10000] [--no-record] [--smoke]
(--smoke: 2 racks x 4 nodes x 50 CTs, one repetition; see bench/README.md)
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import emit, parse_args

from ctmanager.dc.model import NodeSpec
from ctmanager.operations import inventory
from ctmanager.render.tree import render_tree
from ctmanager.store import open_store

RACKS, HNS, CTS = 16, 40, 10_000


def build_store(work: Path, racks: int = RACKS, hns: int = HNS, cts: int = CTS) -> Path:
    """A store of `racks` racks x `hns` nodes (the last one storage) x `cts` CTs, on SQLite."""
    text = (ROOT / "templates/dc/example.toml").read_text()
    text = text[: text.index("[[racks]]")]  # the DC without its installed racks/tenants
    (work / "dc.toml").write_text(text)
    path = work / "bench.db"
    store = open_store(path, create=True)
    with store.transaction():
        dc = inventory.init(store, work / "dc.toml")
        inv = inventory.Inventory(store, dc)
        for r in range(racks):
            slot = 101 + r
            nodes = tuple(NodeSpec(p, "storage" if p == hns else "compute", f"SN{slot}X{p:03d}",
                                   f"52:54:{slot >> 8:02x}:{slot & 0xff:02x}:00:{p:02x}") for p in range(1, hns + 1))
            inv.install_rack(slot, nodes, "bench")
        have = store.one("SELECT count(*) FROM cts")[0]
        for i in range(cts - have):
            inv.add_tenant(f"t{i:05d}", 101 + i % racks, ("jira", "postgresql"), dc.defaults)
    assert store.one("SELECT count(*) FROM cts")[0] == cts
    store.close()
    return path


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_baseline(outdir: Path, sizes: list[tuple[str, int]], repeat: int) -> list[float]:
    """The floor: create the same files (same names and sizes) with a bare
    open/write/close loop in one process, no rendering, no atomicity."""
    out = []
    for _ in range(repeat):
        shutil.rmtree(outdir, ignore_errors=True)
        for d in sorted({os.path.dirname(rel) for rel, _ in sizes}):
            os.makedirs(outdir / d, exist_ok=True)
        t0 = time.perf_counter()
        for rel, size in sizes:
            fd = os.open(outdir / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, b"x" * size)
            os.close(fd)
        out.append(time.perf_counter() - t0)
    shutil.rmtree(outdir, ignore_errors=True)
    return out


def rendered_sizes(outdir: Path) -> list[tuple[str, int]]:
    return [(str(p.relative_to(outdir)), p.stat().st_size) for p in outdir.rglob("*") if p.is_file()]


def bench_render(store_path: Path, outdir: Path, repeat: int) -> tuple[list[float], list[float], int]:
    cold, warm = [], []
    files = 0
    for _ in range(repeat):
        shutil.rmtree(outdir, ignore_errors=True)
        with open_store(store_path) as store:
            report = None

            def run() -> None:
                nonlocal report
                report = render_tree(store, outdir)

            cold.append(timed(run))
            files = len(report.written)
            warm.append(timed(lambda: render_tree(store, outdir)))
    return cold, warm, files


def bench_status(store_path: Path, repeat: int) -> list[float]:
    env = {**os.environ, "CTMANAGER_STORE": str(store_path), "PYTHONPATH": str(ROOT)}
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "ctmanager", "status", "--json"], env=env,
                              stdout=subprocess.DEVNULL, check=True)
        out.append(time.perf_counter() - t0)
        assert proc.returncode == 0
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--racks", type=int, default=RACKS, help=f"racks in the DC (default {RACKS})")
    ap.add_argument("--hns", type=int, default=HNS, help=f"nodes per rack, the last one storage (default {HNS})")
    ap.add_argument("--cts", type=int, default=CTS, help=f"CTs in all (default {CTS:,})")
    args = parse_args(ap, repeat=1, racks=2, hns=4, cts=50)
    # /tmp is on the same ext4 disk here; /dev/shm is tmpfs. Never inside the repo.
    with tempfile.TemporaryDirectory() as disk_tmp, tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        t0 = time.perf_counter()
        store_path = build_store(Path(disk_tmp), args.racks, args.hns, args.cts)
        setup = time.perf_counter() - t0
        rows = []
        for label, outdir in (("disk (ext4, /tmp)", Path(disk_tmp) / "out"), ("tmpfs (/dev/shm)", Path(shm) / "out")):
            cold, warm, files = bench_render(store_path, outdir, args.repeat)
            base = bench_baseline(outdir.with_name("baseline"), rendered_sizes(outdir), args.repeat)
            ratio = statistics.median(cold) / statistics.median(base)
            rows.append((f"render {args.cts} CTs, {files} files, cold, {label} ({ratio:.1f}x the baseline)",
                         min(cold), statistics.median(cold), 1.0))
            rows.append((f"baseline: bare create of the same {files} files, one process, {label}",
                         min(base), statistics.median(base), None))
            rows.append((f"render again, nothing changed, {label}", min(warm), statistics.median(warm), 0.3))
        st = bench_status(store_path, args.repeat if args.smoke else max(5, args.repeat))
        rows.append((f"status --json, {args.cts} CTs, whole process", min(st), statistics.median(st), 0.5))
    intro = [f"Store: {args.racks} racks x {args.hns} nodes, {args.cts} CTs (built in {setup:.1f} s, not timed below).", ""]
    emit("foundation", intro, [(name, f"{best:.3f} s", f"{med:.3f} s", "" if target is None else f"<= {target} s",
                                "" if target is None else ("yes" if med <= target else "NO"))
                               for name, best, med, target in rows], record=not args.no_record, smoke=args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
