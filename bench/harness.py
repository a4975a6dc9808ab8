"""What every benchmark script shares: the machine line, the results table, RESULTS.md,
and the smoke mode (`--smoke`: see bench/README.md)."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

Row = tuple[str, str, str, str, str]  # name, best, median, target, met

SMOKE_HELP = ("smoke run: the same code path at tiny sizes (a few CTs or files, 1-2 repetitions), in seconds; "
              "nothing is appended to RESULTS.md and a missed target does not fail it: it exits non-zero only if "
              "the benchmark cannot run (tests/integration/test_bench_smoke.py runs it in CI)")


def parse_args(ap: argparse.ArgumentParser, argv: list[str] | None = None, **tiny: object) -> argparse.Namespace:
    """The script's options, plus the two every benchmark takes: --no-record and --smoke.
    With --smoke, the options in `tiny` default to those values (an option given on the
    command line still wins)."""
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args(argv)
    if args.smoke and tiny:
        ap.set_defaults(**tiny)
        args = ap.parse_args(argv)
    return args


def ctm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`ctmanager ARGS` with `env`; a failure ends the benchmark with its message."""
    p = subprocess.run([sys.executable, "-m", "ctmanager", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    if p.returncode != 0:
        raise SystemExit(f"ctmanager {' '.join(args)}: {p.stderr.strip()}")
    return p


def fresh_lab(name: str) -> tuple[Path, dict[str, str]]:
    """A new store and lab folder for one benchmark, with the example DC in the
    store; any lab already up in the default folder is taken down first."""
    if os.geteuid() != 0:
        raise SystemExit(f"{name} needs root")
    base = Path(tempfile.mkdtemp(prefix=f"ctm-{name.replace('_', '-')}-"))
    env = {**os.environ, "CTMANAGER_STORE": str(base / "ctm.db"), "CTMANAGER_LAB_DIR": str(base / "rack")}
    subprocess.run([sys.executable, "-m", "ctmanager", "lab", "down", "--dir", "/var/lib/ctmanager-lab"], cwd=ROOT,
                   env=env, capture_output=True)
    ctm(env, "init", "example")
    return base, env


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def emit(title: str, intro: list[str], rows: list[Row], *, record: bool, smoke: bool = False) -> None:
    """Print the results table and, if `record`, append it to bench/RESULTS.md (newest last).
    A smoke run's table says so in its title and is never recorded."""
    if smoke:
        title, record = f"{title} (smoke run: tiny sizes, not figures)", False
    lines = [f"### {title} — {time.strftime('%Y-%m-%d')} — {machine()}", "", *intro,
             "| benchmark | best | median | target | met |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if record:
        results = ROOT / "bench" / "RESULTS.md"
        if not results.exists():
            results.write_text("# Benchmark results\n\nAppended by the scripts in bench/; newest last.\n\n")
        with results.open("a") as f:
            f.write(text + "\n")
