#!/usr/bin/env python3
"""Reconcile benchmarks (issue: agent + reconcile loop). Not a test: prints figures
and appends them to bench/RESULTS.md with the machine noted.

  - plan() for 10,000 CTs on 200 HNs, converged (everything where it belongs): <= 100 ms;
  - plan() for the one CT whose report changed (it crashed): <= 5 ms;
  - plan() when 500 of the CTs are new and must be scheduled (no target; shown for scale);
  - report ingestion: signed reports of 100 CTs each, verified and indexed, on one core: >= 5,000/s,
    and >= 70 % of a bare HMAC-verify + json.loads loop over the same datagrams (same process).

Usage: python bench/bench_reconcile.py [--repeat N] [--no-record] [--smoke]
(--smoke: 1,000 CTs on 20 HNs, 50 new, 500 reports, one repetition; see bench/README.md)
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import emit, parse_args

from ctmanager.dc.model import Ct, Resources
from ctmanager.reconcile import Configured, Hn, Observed, Placements, plan
from ctmanager.wire.reports import CtState, Metrics, Receiver, Report, sign

CTS, HNS, PER_REPORT = 10_000, 200, 100
NEW, REPORTS = 500, 5000  # CTs to schedule in the third plan; datagrams in the ingestion runs
NOW = 1_800_000_000.0
KEY = b"bench-key-0123456789abcdef012345"
G = 1 << 30


def world(new: int = 0, n_cts: int = CTS, n_hns: int = HNS) -> tuple[Configured, Observed, Placements]:
    hns = {f"hn-101-{i}": Hn(f"hn-101-{i}", 256 * G, 4096 * G) for i in range(1, n_hns + 1)}
    names = sorted(hns)
    res = Resources(2 * G, 0, 20 * G, 2, 1000, 200)
    cts, where = {}, {}
    per_hn: dict[str, list[CtState]] = {hn: [] for hn in names}
    for i in range(n_cts):
        ctid = 1001 + i
        service = ("relay", "socks", "metrics")[i % 3] if i < 600 else None
        cts[ctid] = Ct(ctid, f"ct{ctid}", 101, None, service, "prod", "10.1.2.3", "storage-101-1", "UP", res, ())
        if i < n_cts - new:
            hn = names[i % n_hns]
            where[ctid] = hn
            per_hn[hn].append(CtState(ctid, "UP", NOW - 600))
    observed = Observed()
    for hn, states in per_hn.items():
        metrics = Metrics(0.3, 256 * G, 256 * G - len(states) * 2 * G, 4096 * G, 3000 * G, len(states))
        observed.update(Report(101, hn, "0123456789abcdef", 1, NOW, False, metrics, tuple(states)), NOW)
    return Configured(cts, hns), observed, Placements(where)


def best_median(fn, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def bench_plan(repeat: int, cts: int = CTS, hns: int = HNS, new: int = NEW
               ) -> list[tuple[str, float, float, float | None, str]]:
    configured, observed, placements = world(0, cts, hns)
    rows = []
    full = plan(configured, observed, placements, NOW)
    assert not full.actions and not full.place, full.lines()[:3]
    b, m = best_median(lambda: plan(configured, observed, placements, NOW), repeat)
    rows.append((f"plan(), {cts} CTs on {hns} HNs, converged, full", b * 1e3, m * 1e3, 100.0, "ms"))
    # One CT crashed: its HN's next report says DOWN; only that CT is planned.
    victim = 1001 + cts // 2
    hn = placements.where[victim]
    old = observed.reports[hn]
    crashed = tuple(CtState(c.ctid, "DOWN" if c.ctid == victim else c.opst, c.since) for c in old.cts)
    changed = observed.update(Report(101, hn, old.boot_id, 2, NOW + 1, False, old.metrics, crashed), NOW + 1)
    assert changed == {victim}
    one = plan(configured, observed, placements, NOW + 1, only=changed)
    assert [a.kind for a in one.actions] == ["start"], one.lines()
    b, m = best_median(lambda: plan(configured, observed, placements, NOW + 1, only=changed), repeat * 20)
    rows.append(("plan(), the one CT whose report changed", b * 1e3, m * 1e3, 5.0, "ms"))
    configured, observed, placements = world(new, cts, hns)
    got = plan(configured, observed, placements, NOW)
    assert len(got.place) == new, got.notes[:3]
    b, m = best_median(lambda: plan(configured, observed, placements, NOW), repeat)
    rows.append((f"plan(), {cts} CTs, {new} of them new (scheduled)", b * 1e3, m * 1e3, None, "ms"))
    return rows


def bench_ingest(repeat: int, n: int = REPORTS) -> list[tuple[str, float, float, float | None, str]]:
    """Reports taken in the way the manager takes them (verify, parse, freshness,
    index), against a bare loop over the same datagrams in the same process: HMAC
    verify + json.loads, nothing checked, nothing kept. Target: >= 70 % of bare."""
    states = tuple(CtState(1001 + i, "UP", NOW - 600) for i in range(PER_REPORT))
    metrics = Metrics(0.3, 256 * G, 100 * G, 4096 * G, 3000 * G, PER_REPORT)
    datagrams = [sign(Report(101, f"hn-101-{i % HNS + 1}", "0123456789abcdef", i + 1, NOW, False, metrics, states), KEY)
                 for i in range(n)]
    rates, bare, ratios = [], [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for d in datagrams:  # the floor: what any receiver must do
            mac, body = d[:32], d[32:]
            hmac.compare_digest(mac, hmac.new(KEY, body, hashlib.sha256).digest())
            json.loads(body)
        b = n / (time.perf_counter() - t0)
        rx, observed = Receiver(KEY, 101), Observed()
        t0 = time.perf_counter()
        for d in datagrams:
            report = rx.receive(d, "10.1.1.1", NOW)
            if report is not None:
                observed.update(report, NOW)
        r = n / (time.perf_counter() - t0)
        assert rx.accepted == n
        rates.append(r)
        bare.append(b)
        ratios.append(100 * r / b)
    return [(f"report ingestion ({PER_REPORT} CTs each, verify + index), reports/s", max(rates),
             statistics.median(rates), 5000.0, "/s"),
            ("bare HMAC verify + json.loads over the same datagrams, reports/s", max(bare), statistics.median(bare),
             None, "/s"),
            ("ingestion as % of bare (same process, same run)", max(ratios), statistics.median(ratios), 70.0, "%")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = parse_args(ap, repeat=1)
    if args.smoke:
        rows = bench_plan(args.repeat, 1000, 20, 50) + bench_ingest(args.repeat, 500)
    else:
        rows = bench_plan(args.repeat) + bench_ingest(args.repeat)
    out = []
    for name, best, med, target, unit in rows:
        higher = unit in ("/s", "%")
        met = "" if target is None else ("yes" if (med >= target if higher else med <= target) else "NO")
        tgt = "" if target is None else (f">= {target:.0f}{unit}" if higher else f"<= {target:g} {unit}")
        out.append((name, f"{best:.2f} {unit}", f"{med:.2f} {unit}", tgt, met))
    emit("reconcile", [], out, record=not args.no_record, smoke=args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
