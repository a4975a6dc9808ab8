#!/usr/bin/env python3
"""ctmailmap benchmark (issue: proxies): lookups per second over persistent
connections, and the latency at that load. The daemon runs in its own process
(one core, asyncio); the load comes from another process: CONNS connections,
each sending `get KEY` and waiting for the answer, as Postfix's tcp_table does.
Target: >= 20,000 lookups/s, p99 <= 1 ms. Then the same beside a flood client
(a third process), connection after connection: 64 KB of newlines then a close,
or 64 KB of newlines or of pipelined lookups again and again, never reading,
until the daemon drops it. Target: the normal clients still >= 20,000 lookups/s, p99 <= 2 ms.

Usage: python bench/bench_mailmap.py [--seconds 5] [--conns 16] [--no-record] [--smoke]
(--smoke: 0.5 s of load on 4 connections, each way; see bench/README.md)
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import Row, emit, parse_args

KEYS = [b"get jira@myhost.example.net\n", b"get bob@myhost.example.net\n", b"get myhost.example.net\n",
        b"get x@nowhere.example.org\n", b"get confluence@acme.example.net\n"]


async def client(port: int, until: float, lat: list[float], rng: random.Random) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    while time.perf_counter() < until:
        key = KEYS[rng.randrange(len(KEYS))]
        t0 = time.perf_counter()
        writer.write(key)
        line = await reader.readline()
        lat.append(time.perf_counter() - t0)
        assert line[:3] in (b"200", b"500"), line
        n += 1
    writer.close()
    return n


def flood(port: int, stop: Any, conns: Any) -> None:
    """Junk, connection after connection: 64 KB of newlines then a close (the flood that once stalled
    every client for seconds); 64 KB of newlines, or of pipelined lookups, again and again, never read."""
    junk = [b"\n" * 65536, KEYS[0] * (65536 // len(KEYS[0]))]
    n = 0
    while not stop.is_set():
        n += 1
        with conns.get_lock():
            conns.value += 1
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                while not stop.is_set():
                    s.sendall(junk[n % 2])  # never a recv
                    if n % 3 == 0:
                        break
        except OSError:
            pass  # dropped by the daemon (or not read any more, a timeout): again


async def load(port: int, seconds: float, conns: int) -> tuple[int, list[float]]:
    lat: list[float] = []
    until = time.perf_counter() + seconds
    counts = await asyncio.gather(*(client(port, until, lat, random.Random(i)) for i in range(conns)))
    return sum(counts), lat


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--conns", type=int, default=16, help="connections (default 16)")
    args = parse_args(ap, seconds=0.5, conns=4)
    base = Path(tempfile.mkdtemp(prefix="ctm-bench-mailmap-"))
    env = {**os.environ, "CTMANAGER_STORE": str(base / "ctm.db")}
    subprocess.run([sys.executable, "-m", "ctmanager", "init", "example"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon = subprocess.Popen([sys.executable, "-m", "ctmanager.proxies.mailmap", "--store", str(base / "ctm.db"),
                               "--listen", f"127.0.0.1:{port}"], cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("ctmailmap did not start") from None
                time.sleep(0.05)
        asyncio.run(load(port, min(1.0, args.seconds), args.conns))  # warm up
        total, lat = asyncio.run(load(port, args.seconds, args.conns))
        stop, flood_conns = multiprocessing.Event(), multiprocessing.Value("i", 0)
        flooder = multiprocessing.Process(target=flood, args=(port, stop, flood_conns))
        flooder.start()
        try:
            time.sleep(0.5)  # the flood under way
            flooded_total, flooded_lat = asyncio.run(load(port, args.seconds, args.conns))
        finally:
            stop.set()
            flooder.join(10)
    finally:
        daemon.terminate()
        daemon.wait(10)
    rows: list[Row] = []
    for label, count, lats, p99_target in ((f"{args.conns} persistent connections", total, lat, 0.001),
                                           (f"{args.conns} connections + the flood", flooded_total, flooded_lat, 0.002)):
        rate = count / args.seconds
        lats.sort()
        p99 = lats[int(len(lats) * 0.99)]
        slowest = f", slowest {lats[-1] * 1e3:.1f} ms" if lats is flooded_lat else ""
        rows += [(f"ctmailmap lookups/s, {label}, {args.seconds:g} s", f"{rate:,.0f}/s", f"{rate:,.0f}/s",
                  ">= 20,000/s", "yes" if rate >= 20000 else "NO"),
                 ("ctmailmap latency at that load (client side)", f"{lats[0] * 1e3:.2f} ms",
                  f"{statistics.median(lats) * 1e3:.2f} ms (p99 {p99 * 1e3:.2f} ms{slowest})",
                  f"p99 <= {p99_target * 1e3:g} ms", "yes" if p99 <= p99_target else "NO")]
    emit("mailmap", ["Daemon in its own process (asyncio, one core); load from a second process; the flood from a "
                     "third: connections sending 64 KB of \\n then closing, or 64 KB of \\n or of pipelined lookups "
                     f"again and again, never reading ({flood_conns.value:,} flood connections in "
                     f"{args.seconds + 0.5:g} s)."], rows, record=not args.no_record, smoke=args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
