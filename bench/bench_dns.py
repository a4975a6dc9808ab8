#!/usr/bin/env python3
"""DNS benchmarks (issue: DNS service routing), against a real BIND 9 on loopback.

  - publish 10,000 A records into an empty zone (RFC 2136 + TSIG, batched):
    records/s; target >= 5,000/s;
  - one route change: `ctmanager route set` (which publishes before it returns)
    until a query to BIND answers with the new target; median over 20 changes;
    target <= 100 ms;
  - `dns verify` of those 10,000 records (AXFR + compare); target <= 2 s.

Usage: python bench/bench_dns.py [--records 10000] [--changes 20] [--no-record] [--smoke]
(--smoke: 100 records, 2 changes; see bench/README.md)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from bindserver import Bind, free_port
from harness import ctm, emit, parse_args

from ctmanager.dnsroutes import publisher, records, sync
from ctmanager.dnsroutes.records import Change, RRset
from ctmanager.store import open_store, queries


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--changes", type=int, default=20)
    args = parse_args(ap, records=100, changes=2)
    base = Path(tempfile.mkdtemp(prefix="ctm-bench-dns-"))
    env = {**os.environ, "CTMANAGER_STORE": str(base / "ctm.db")}
    port = free_port()
    ctm(env, "init", "example")
    ctm(env, "dns", "bind-config", str(base / "bind"), "--port", str(port))
    bind = Bind(base / "bind", port)
    bind.start()
    try:
        ctm(env, "dns", "configure", "--server", f"127.0.0.1:{port}", "--key-file", str(base / "bind" / "tsig.key"))
        ctm(env, "dns", "sync")
        store = open_store(base / "ctm.db")
        server = sync.require_server(store)
        zones = records.zones(queries.dc_template(store))
        # 1. bulk publish into the (otherwise empty) infra zone, under a name of its own
        changes = [Change(n, "A", None, RRset(n, "A", (f"10.{200 + i // 65536}.{i // 256 % 256}.{i % 256}",), 60))
                   for i in range(args.records) for n in [f"bulk{i}.bench.{zones.infra}"]]
        started = time.perf_counter()
        out = publisher.publish(server, zones, changes,
                                on_applied=lambda done: sync.record_applied(store, done, {}, time.time()))
        publish_s = time.perf_counter() - started
        assert len(out.applied) == args.records and not out.conflicts, (len(out.applied), out.conflicts[:3])
        rate = args.records / publish_s
        # 3. verify: AXFR of both zones and a compare with the registry
        started = time.perf_counter()
        report = sync.verify(store, server, repair=False)
        verify_s = time.perf_counter() - started
        assert report.drift == [], report.drift[:3]
        # 2. route changes, from `route set` returning to BIND answering with the new target
        delays = []
        for i in range(args.changes):
            target = ("relay-101-1", "relay-101-2")[i % 2]
            ctm(env, "route", "set", "myhost", "smtp", target)
            done = time.perf_counter()
            want = f"{target}.rack-101.{zones.infra}"
            while bind.query("smtp.myhost.example.net.internal.", "CNAME") != [want]:
                if time.perf_counter() - done > 5:
                    raise SystemExit("the route change never became visible")
                time.sleep(0.001)
            delays.append(time.perf_counter() - done)
        store.close()
    finally:
        bind.stop()
    med = statistics.median(delays)
    rows = [
        (f"publish {args.records:,} A records into an empty zone ({out.messages} messages)",
         f"{rate:,.0f}/s", f"{rate:,.0f}/s ({publish_s:.2f} s)", ">= 5,000/s", "yes" if rate >= 5000 else "NO"),
        (f"route set -> visible in a query to BIND ({len(delays)} changes)", f"{min(delays) * 1000:.1f} ms",
         f"{med * 1000:.1f} ms (max {max(delays) * 1000:.1f} ms)", "<= 100 ms median", "yes" if med <= 0.1 else "NO"),
        (f"dns verify of {args.records:,} records (AXFR + compare)", f"{verify_s:.2f} s", f"{verify_s:.2f} s",
         "<= 2 s", "yes" if verify_s <= 2 else "NO"),
    ]
    emit("dns", ["Real BIND 9 on loopback, TSIG hmac-sha256; publisher batches 1,000 changes per update message."],
         rows, record=not args.no_record, smoke=args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
