"""Benchmarks rot when nothing runs them: every bench/bench_*.py runs here in its
smoke mode (`--smoke`: the same code path at tiny sizes; bench/README.md), as a
subprocess with this Python (the venv's) from the repo root. It must exit 0, print
its results table (title and rows) and leave bench/RESULTS.md alone. The lab ones
need root, LXC and the rest of scripts/setup.sh, like the other lab tests; each
takes down any lab first, as the lab tests leave none behind.

Each script's own temporary folders go into one of this test's (TMPDIR), removed
afterwards unless something is still mounted there."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from labrack import ROOT

BENCH = ROOT / "bench"
LAB = ("lxc-start", "sshd", "svscan", "ip")


@dataclass(frozen=True)
class Smoke:
    title: str  # emit()'s, before " (smoke run: ...)"
    rows: int  # at least this many result rows
    needs: tuple[str, ...] = ()  # binaries
    root: bool = False
    timeout: float = 120.0  # s, the whole run


# Fast ones first. Measured smoke times (2 cores) in bench/README.md.
SMOKES = {
    "bench_edge.py": Smoke("edge", 2, ("nginx",)),
    "bench_reconcile.py": Smoke("reconcile", 6),
    "bench_autolink.py": Smoke("autolink", 2),
    "bench_foundation.py": Smoke("foundation", 7),
    "bench_sim.py": Smoke("simulator", 2),
    "bench_dns.py": Smoke("dns", 3, ("named",)),
    "bench_mailmap.py": Smoke("mailmap", 4),
    "bench_store.py": Smoke("bench_store: the DC-wide store", 8, root=True),
    "bench_backup.py": Smoke("continuous backup", 12, ("borg", "sshd"), root=True, timeout=240),
    "bench_lab.py": Smoke("lab", 2, LAB, root=True, timeout=300),
    "bench_failover.py": Smoke("failover", 1, LAB, root=True, timeout=300),
    "bench_takeover.py": Smoke("takeover", 4, LAB, root=True, timeout=300),
    "bench_peering.py": Smoke("cloud peering", 2, (*LAB, "bird"), root=True, timeout=300),
    "bench_move.py": Smoke("tenant move", 7, (*LAB, "rsync"), root=True, timeout=400),
    "bench_deb.py": Smoke("bench_deb: the Debian package", 8, ("debootstrap", "dpkg-deb"), root=True, timeout=900),
}
# Scripts not run here, and why (each a finding to fix, not a place to park one).
LEFT_OUT: dict[str, str] = {}


def test_every_benchmark_has_a_smoke_run() -> None:
    scripts = {p.name for p in BENCH.glob("bench_*.py")}
    assert scripts == set(SMOKES) | set(LEFT_OUT), "add the new benchmark (and its --smoke) to SMOKES"
    assert not set(SMOKES) & set(LEFT_OUT)


@pytest.mark.parametrize("script", list(SMOKES))
def test_the_benchmark_runs_in_smoke_mode(script: str) -> None:
    smoke = SMOKES[script]
    missing = [b for b in smoke.needs if not shutil.which(b) and not Path("/usr/sbin", b).exists()]
    if missing or (smoke.root and os.geteuid() != 0):
        pytest.skip(f"{script} needs {'root and ' if smoke.root else ''}{', '.join(missing) or 'root'} "
                    "(bash scripts/setup.sh)")
    results = (BENCH / "RESULTS.md").read_bytes()
    tmp = Path(tempfile.mkdtemp(prefix="ctm-bench-smoke-"))
    tmp.chmod(0o755)  # a private PostgreSQL in there runs as the postgres user
    try:
        code, out = run(script, smoke.timeout, {**os.environ, "TMPDIR": str(tmp)})
    finally:
        if not mounted_under(tmp):  # never rm -rf through a mount (a lab's /usr bind, a tmpfs)
            shutil.rmtree(tmp, ignore_errors=True)
    assert code == 0, f"{script} --smoke exited {code}:\n{out[-4000:]}"
    lines = out.splitlines()
    head = f"### {smoke.title} (smoke run: tiny sizes, not figures) — "
    at = next((i for i, line in enumerate(lines) if line.startswith(head)), None)
    assert at is not None, f"{script} --smoke printed no table titled {head!r}:\n{out[-4000:]}"
    table = [line for line in lines[at:] if line.startswith("| ")]
    assert table[:1] == ["| benchmark | best | median | target | met |"], out[-4000:]
    assert len(table) - 2 >= smoke.rows, f"{script} --smoke printed {len(table) - 2} result rows:\n{out[-4000:]}"
    assert (BENCH / "RESULTS.md").read_bytes() == results, f"{script} --smoke appended to RESULTS.md"


def run(script: str, timeout: float, env: dict[str, str]) -> tuple[int, str]:
    """(exit code, stdout and stderr); at the timeout, SIGINT first, so that the
    script's own clean-up (`lab down`, ...) runs."""
    p = subprocess.Popen([sys.executable, str(BENCH / script), "--smoke"], cwd=ROOT, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGINT)
        try:
            out, _ = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        return -1, f"{out}\n(timed out after {timeout:g} s)"
    return p.returncode, out


def mounted_under(folder: Path) -> list[str]:
    points = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    return [p for p in points if p == str(folder) or p.startswith(f"{folder}/")]
