"""plan() scenarios, one folder each under tests/scenarios/plan (see its README)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from ctmanager import validate as v
from ctmanager.dc.model import Ct, Resources
from ctmanager.reconcile import Configured, Hn, Observed, Placements, plan
from ctmanager.wire.reports import CtState, Metrics, Report

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios" / "plan"
NAMES = sorted(p.name for p in SCENARIOS.iterdir() if (p / "input.toml").exists())


def size(text: str) -> int:
    return v.size(text, "size")


def load(data: dict[str, Any]) -> tuple[Configured, Observed, Placements, float]:
    now = float(data["now"])
    hns = {h["hostname"]: Hn(h["hostname"], size(h.get("memory", "64G")), size(h.get("disk", "1T")),
                              h.get("drained", False)) for h in data.get("hns", [])}
    cts = {}
    hashes = {c["ctid"]: c["spec"] for c in data.get("cts", []) if "spec" in c}
    for c in data.get("cts", []):
        res = Resources(size(c.get("memory", "1G")), 0, size(c.get("disk", "10G")), 1, 1000, 100)
        cts[c["ctid"]] = Ct(c["ctid"], c["hostname"], 101, None, c.get("service") or None, "prod", "10.1.2.3",
                            "storage-101-4", c.get("admst", "UP"), res, ())
    removed = {int(k): bool(p) for k, p in data.get("removed", {}).items()}
    observed = Observed()
    for r in data.get("reports", []):
        at = now - r.get("age", 0.5)
        metrics = Metrics(r.get("cpu_load", 0.1), size(r.get("mem_total", "64G")), size(r.get("mem_free", "60G")),
                          size(r.get("disk_total", "1T")), size(r.get("disk_free", "900G")), len(r.get("cts", [])))
        states = tuple(CtState(ctid, opst, at - 100, *spec) for ctid, opst, *spec in r.get("cts", []))
        observed.update(Report(101, r["hn"], "0123456789abcdef", 1, at, r.get("drained", False), metrics, states,
                               r.get("fenced", False)), at)
    observed.dead = frozenset(data.get("dead", []))
    placements = Placements({int(k): hn for k, hn in data.get("placements", {}).items()},
                            {(r["ctid"], r["hn"]): float(r["until"]) for r in data.get("rejected", [])})
    looped = {int(k): n for k, n in data.get("crash_looped", {}).items()}
    return Configured(cts, hns, removed, hashes, looped), observed, placements, now


@pytest.mark.parametrize("name", NAMES)
def test_scenario(name: str) -> None:
    folder = SCENARIOS / name
    configured, observed, placements, now = load(tomllib.loads((folder / "input.toml").read_text()))
    got = "".join(f"{line}\n" for line in plan(configured, observed, placements, now).lines())
    expected = folder / "expected.log"
    if os.environ.get("CTMANAGER_UPDATE_GOLDEN") == "1":
        expected.write_text(got)
    assert got == expected.read_text(), f"tests/scenarios/plan/{name}/expected.log"


@pytest.mark.parametrize("name", NAMES)
def test_scenario_plans_only_the_ctids_asked_for(name: str) -> None:
    """plan(only=...) over every CTID, one at a time, gives the same actions as the full plan
    (except for CTs being scheduled: a placement reserves room for the CTs planned after it)."""
    configured, observed, placements, now = load(tomllib.loads((SCENARIOS / name / "input.toml").read_text()))
    full = plan(configured, observed, placements, now)
    scheduled = {c for c in configured.cts if c not in placements.where} | full.place.keys()
    ctids = sorted((configured.cts.keys() | configured.removed.keys() | observed.where.keys()) - scheduled)
    pieces = [a for ctid in ctids for a in plan(configured, observed, placements, now, only=[ctid]).actions]
    assert pieces == [a for a in full.actions if a.ctid not in scheduled]
