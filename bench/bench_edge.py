#!/usr/bin/env python3
"""Edge benchmark (issue: proxies): render the nginx edge for 10,000 tenants
(plus one global and 100 per-tenant path routes) and check it with `nginx -t`.
Target: render <= 1 s, and nginx accepts it.

Usage: python bench/bench_edge.py [--tenants 10000] [--repeat 5] [--no-record] [--smoke]
(--smoke: 100 tenants, 2 renders; see bench/README.md)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import emit, parse_args

from ctmanager.proxies import nginx


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tenants", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5, help="renders timed (default 5)")
    args = parse_args(ap, tenants=100, repeat=2)
    tenants = tuple(f"t{i:05d}" for i in range(args.tenants))
    routes = (nginx.path_route("/experimental/", "experiments", strip=True, allow=["10.0.0.0/8"]),) + tuple(
        nginx.path_route("/wiki/", "confluence", tenant=t) for t in tenants[:100])
    base = Path(tempfile.mkdtemp(prefix="ctm-bench-edge-"))
    try:
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            text = nginx.render(nginx.Edge("example.net", ("10.0.0.53", "10.0.1.53"), tenants, routes,
                                           prefix=str(base / "prefix"), listen_http=18080))
            times.append(time.perf_counter() - t0)
        (base / "edge.conf").write_text(text)
        (base / "prefix").mkdir()
        t0 = time.perf_counter()
        p = subprocess.run(["nginx", "-t", "-c", str(base / "edge.conf"), "-p", str(base / "prefix"), "-e",
                            str(base / "prefix" / "error.log")], capture_output=True, text=True)
        check_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ok = p.returncode == 0
    best, med = min(times), sorted(times)[len(times) // 2]
    rows = [(f"render the edge for {args.tenants:,} tenants ({len(routes)} path routes, {len(text) >> 10} KiB)",
             f"{best * 1000:.0f} ms", f"{med * 1000:.0f} ms", "<= 1 s", "yes" if med <= 1 else "NO"),
            ("nginx -t of that config", f"{check_s:.2f} s", "accepted" if ok else p.stderr.strip()[-200:],
             "accepted", "yes" if ok else "NO")]
    emit("edge", ["nginx 1.22 (Debian nginx-light)."], rows, record=not args.no_record, smoke=args.smoke)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
