#!/usr/bin/env python3
"""Tenant move benchmark (issue: tenant moves between racks), on a DC lab of two
racks (rack-101, rack-102, 3 + 2 HNs, real LXC, sshd, rsync, BIND) on a private
PostgreSQL store. Needs root.

The tenant `acme` gets 1 GiB of /data in 10,000 files (--gib, --files). It is moved back and forth
(`tenant move --wait`) while a writer rewrites 1 % of its files (100, same size,
new content) during each move's copy phase, as the tenant's own CT would.

- downtime: from the stop at the source (the hold) to the tenant UP at the
  destination with its name published; the workflow records it, and a watcher
  polling the DNS server (dig, every 50 ms) sees the new address within it.
  Target: median <= 1.5 s over >= 3 moves (issue: moves inside the loop). Its parts,
  from the move's own log: the source leader's certificate (it let every CT
  go: its stop, proved done; the seal went on meanwhile), the final copy, the start there.
- the naive way, in the same run, on the same tenant and the same bandwidth
  limit: stop, copy everything, start (`tenant move --no-precopy`). Target:
  naive downtime / move downtime >= 10.
- pre-copy passes per move: <= 3 (the final pass is counted apart).
- after every move: the destination's copy has the same checksums as the source
  had at the stop (every byte written before it is there).

The bandwidth limit is the manager's default ([moves] bwlimit = 50M): the lab's
"network" is this machine's memory, and the limit is what stands for the storage
network's share. Without one, a copy of 1 GiB here takes a second or two and no
method can be ten times faster than that.

The moves go through the CLI only (`tenant move --wait`, `tenant moves --json`), the
DC lab is built by tests/integration/labrack.py's dc_lab: nothing here knows how the
manager carries a move out.

Usage: python bench/bench_move.py [--moves 3] [--gib 1.0] [--files 10000] [--trace] [--no-record] [--smoke]
(--trace: after each move, both racks' manager log lines from the stop to online,
timed from the stop: which action or step the downtime went to)
(--smoke: one move and one naive move of 1 MiB in 100 files; see bench/README.md)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from harness import emit, parse_args  # noqa: E402
from labrack import DcLab, dc_lab, wait_for  # noqa: E402

from ctmanager.lab.pgserver import Cluster  # noqa: E402

TENANT = "acme"
FILES = 10_000  # --files
START = time.monotonic()
MOVE_TIMEOUT = 1800.0  # s: a move not online (nor finished) by then fails the benchmark


def data_dir(dc: DcLab, rack: str, ctid: int) -> Path:
    r = dc.r101 if rack == "rack-101" else dc.r102
    return Path(r.inv["storage"][0]["data"]) / str(ctid)


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted((folder / "files").iterdir()):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def seed(folder: Path, gib: float) -> int:
    size = int(gib * (1 << 30)) // FILES
    out = folder / "files"
    out.mkdir(parents=True, exist_ok=True)
    block = os.urandom(size)
    for i in range(FILES):
        (out / f"f{i:05d}").write_bytes(i.to_bytes(8, "big") + block[8:])
    return size


def rack_of(dc: DcLab) -> str:
    return json.loads(dc.r101.cli("ct", "show", TENANT, "--json").stdout)["rack"]


class Rewriter(threading.Thread):
    """Rewrites 1 % of the files (same size) while the move is in its copy phase."""

    def __init__(self, folder: Path, size: int, moving: callable) -> None:  # type: ignore[valid-type]
        super().__init__(daemon=True)
        self.folder, self.size, self.moving, self.done = folder, size, moving, 0

    def run(self) -> None:
        picks = random.sample(range(FILES), FILES // 100)
        while self.done < len(picks) and self.moving():
            (self.folder / "files" / f"f{picks[self.done]:05d}").write_bytes(os.urandom(self.size))
            self.done += 1
            time.sleep(0.05)


class DnsWatch(threading.Thread):
    """When the tenant's name first resolves to an address other than `old` (wall clock)."""

    def __init__(self, old: str) -> None:
        super().__init__(daemon=True)
        self.old, self.at, self.stop = old, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            got = subprocess.run(["dig", "+short", "+time=1", "+tries=1", "@10.0.0.53",
                                  f"{TENANT}.example.net.internal"], capture_output=True, text=True).stdout.split()
            if got and got[-1] not in (self.old, "") and got[-1][0].isdigit():
                self.at = time.time()
                return
            time.sleep(0.05)


def trace(dc: DcLab, t0: float, t1: float) -> None:
    """Both racks' manager log lines stamped within [t0, t1] (wall clock), timed from t0."""
    lines = []
    for lab in (dc.r101, dc.r102):
        for line in lab.manager_log().splitlines():
            try:
                at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except ValueError:
                continue
            if t0 - 0.05 <= at <= t1 + 0.05:
                lines.append((at, line[24:].replace("ctmanager ", "", 1)))
    for at, text in sorted(lines):
        print(f"      {at - t0:+7.3f} s  {text[:110]}", flush=True)


def one_move(dc: DcLab, size: int, naive: bool, show: bool = False) -> dict[str, float]:
    src = rack_of(dc)
    dst = "rack-102" if src == "rack-101" else "rack-101"
    ctid = int(json.loads(dc.r101.cli("ct", "show", TENANT, "--json").stdout)["ctid"])
    old_ip = json.loads(dc.r101.cli("ct", "show", TENANT, "--json").stdout)["ip"]
    copying = threading.Event()
    copying.set()
    writer = Rewriter(data_dir(dc, src, ctid), size, copying.is_set)
    dns = DnsWatch(old_ip)
    dns.start()
    started = time.time()
    if not naive:
        writer.start()
    # One CLI process follows the move (`--wait` prints its log as it goes): polling with a new CLI process
    # every few ms would take a core of this 2-core machine away from the move it measures.
    argv = [sys.executable, "-m", "ctmanager", "tenant", "move", TENANT, "--to", dst, "--keep-source", "--wait",
            "--timeout", str(int(MOVE_TIMEOUT))] + (["--no-precopy"] if naive else [])
    env = {**os.environ, "CTMANAGER_STORE": dc.r101.store, "CTMANAGER_CONFIG": dc.r101.config}
    out: list[str] = []
    with subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as p:
        assert p.stdout is not None
        for line in p.stdout:
            out.append(line)
            if "stopping the tenant" in line:  # the copy phase ended: the tenant's writes stop with it
                copying.clear()
    copying.clear()
    got = re.search(r"^move (\d+):", "".join(out), re.M)
    if got is None:
        raise SystemExit("tenant move printed no move id:\n" + "".join(out)[-2000:])
    x = next(y for y in json.loads(dc.r101.cli("tenant", "moves", TENANT, "--json").stdout)
             if y["id"] == int(got.group(1)))
    if x["phase"] != "online" and x["finished_at"] is None:
        raise SystemExit(f"move {x['id']}: still {x['phase']} after {MOVE_TIMEOUT:g} s")
    total = time.time() - started
    dns.join(30)
    dns.stop.set()
    if x["stopped_at"] is None:
        raise SystemExit(f"move {x['id']} ended {x['phase']}: {x['error']}")
    t0 = float(x["stopped_at"])  # type: ignore[arg-type]
    marks: dict[str, float] = {}
    for line in x["log"]:  # type: ignore[attr-defined]
        at, _, text = str(line).partition(" ")
        if float(at) >= t0 - 0.001:
            print(f"    +{float(at) - t0:6.3f} s  {text[:100]}", flush=True)
            for key, word in (("released", "let every CT go"), ("final", "final pass"), ("online", "online in")):
                if word in text:
                    marks.setdefault(key, float(at) - t0)
    if show and x["online_at"] is not None:
        trace(dc, t0, float(x["online_at"]))  # type: ignore[arg-type]
    if x["phase"] != "online":
        raise SystemExit(f"move {x['id']} ended {x['phase']}: {x['error']}")
    # the source was kept (--keep-source) and has not changed since the stop: all of it must be there
    if digest(data_dir(dc, dst, ctid)) != digest(data_dir(dc, src, ctid)):
        raise SystemExit(f"move {x['id']}: the destination's copy differs from the source at the stop")
    t = time.monotonic()
    dc.r101.cli("tenant", "move", TENANT, "--delete-source", "--wait", timeout=600)
    print(f"    source copy deleted in {time.monotonic() - t:.1f} s", flush=True)
    stopped = float(x["stopped_at"])  # type: ignore[arg-type]
    return {"downtime": float(x["downtime"]), "dns_downtime": dns.at - stopped if dns.at else float("nan"),  # type: ignore[arg-type]
            "passes": float(x["passes"]) - 1, "total": total, "rewritten": float(writer.done),  # type: ignore[arg-type]
            "copied_mib": float(x["bytes_copied"]) / (1 << 20),  # type: ignore[arg-type]
            "released": marks.get("released", float("nan")),
            "final": marks.get("final", float("nan")) - marks.get("released", float("nan")),
            "start": marks.get("online", float("nan")) - marks.get("final", float("nan"))}


def run(dc: DcLab, args: argparse.Namespace) -> tuple[list[dict[str, float]], list[dict[str, float]], int]:
    """Seed the tenant's /data, then `args.moves` moves each followed by a naive one (back);
    (the moves' figures, the naive ones', the file size)."""
    print(f"DC lab up after {time.monotonic() - START:.1f} s", flush=True)
    ctid = int(json.loads(dc.r101.cli("ct", "show", TENANT, "--json").stdout)["ctid"])
    t = time.monotonic()
    size = seed(data_dir(dc, "rack-101", ctid), args.gib)
    print(f"seeded {FILES} files of {size} bytes in {time.monotonic() - t:.1f} s", flush=True)
    moves, naive = [], []
    for i in range(args.moves):
        moves.append(one_move(dc, size, naive=False, show=args.trace))
        print(f"move {i + 1}: {moves[-1]}", flush=True)
        naive.append(one_move(dc, size, naive=True))
        print(f"naive {i + 1}: {naive[-1]}", flush=True)
    wait_for("acme UP", lambda: dc.r101.status()[TENANT]["opst"] == "UP", timeout=60)
    return moves, naive, size


def main() -> int:
    global FILES
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moves", type=int, default=3, help="moves, and as many naive ones (default 3)")
    ap.add_argument("--gib", type=float, default=1.0, help="the tenant's /data, GiB (default 1)")
    ap.add_argument("--files", type=int, default=FILES, help=f"in that many files (default {FILES:,})")
    ap.add_argument("--trace", action="store_true", help="print the managers' log lines of each move's downtime")
    args = parse_args(ap, moves=1, gib=1 / 1024, files=100)
    FILES = args.files
    if os.geteuid() != 0 or not shutil.which("rsync"):
        raise SystemExit("bench_move needs root and rsync (bash scripts/setup.sh)")
    base = Path(tempfile.mkdtemp(prefix="ctm-bench-move-"))
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="ctm-bench-pg-"))).start()  # its own folder: postgres must reach it
    url = cluster.create_database("ctm_bench_move")
    env = {**os.environ, "CTMANAGER_STORE": url, "CTMANAGER_LAB_DIR": str(base / "lab")}
    subprocess.run([sys.executable, "-m", "ctmanager", "lab", "down", "--dir", "/var/lib/ctmanager-lab"], cwd=ROOT,
                   env=env, capture_output=True)
    try:
        with dc_lab(url, base) as dc:  # the example DC, rack-102 installed, both racks up (3 HNs each)
            moves, naive, _ = run(dc, args)
            down = time.monotonic()
        print(f"DC lab down in {time.monotonic() - down:.1f} s", flush=True)
    finally:
        cluster.stop()
    med = statistics.median(m["downtime"] for m in moves)
    nmed = statistics.median(m["downtime"] for m in naive)
    ratio = nmed / med
    passes = max(m["passes"] for m in moves)
    rows = [
        ("downtime (stop -> UP + name published)", f"{min(m['downtime'] for m in moves):.2f} s", f"{med:.2f} s",
         "median <= 1.5 s", "yes" if med <= 1.5 else "NO"),
        *((f"  {what}", f"{min(m[key] for m in moves):.2f} s", f"{statistics.median(m[key] for m in moves):.2f} s",
           "-", "-") for key, what in (("released", "the source's certificate (its stop, proved)"),
                                       ("final", "then the final copy (the source sealed meanwhile)"),
                                       ("start", "then the start there and the name"))),
        ("  seen by dig (new address resolving)", f"{min(m['dns_downtime'] for m in moves):.2f} s",
         f"{statistics.median(m['dns_downtime'] for m in moves):.2f} s", "-", "-"),
        ("naive downtime (stop, copy all, start)", f"{min(m['downtime'] for m in naive):.2f} s", f"{nmed:.2f} s",
         "-", "-"),
        ("naive / move downtime", "-", f"{ratio:.1f}x", ">= 10x", "yes" if ratio >= 10 else "NO"),
        ("pre-copy passes per move", f"{min(m['passes'] for m in moves):.0f}", f"{passes:.0f} (max)", "<= 3",
         "yes" if passes <= 3 else "NO"),
        ("total move time", f"{min(m['total'] for m in moves):.1f} s",
         f"{statistics.median(m['total'] for m in moves):.1f} s", "recorded", "-"),
        ("files rewritten during each move's copy", "-", f"{statistics.median(m['rewritten'] for m in moves):.0f}",
         f"{FILES // 100} (1 %)", "-"),
    ]
    emit("tenant move", [f"DC lab rack-101 + rack-102 on PostgreSQL; tenant {TENANT} with {args.gib:g} GiB of /data "
                         f"in {FILES} files; {args.moves} moves and {args.moves} naive ones, alternating racks; bandwidth "
                         "limit 50 MiB/s (the default) for both ways; every move's destination checked byte for "
                         "byte against the source at the stop.", ""], rows, record=not args.no_record,
         smoke=args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
