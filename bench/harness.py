"""What every benchmark script shares: the machine line, the results table, RESULTS.md."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

Row = tuple[str, str, str, str, str]  # name, best, median, target, met


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def emit(title: str, intro: list[str], rows: list[Row], *, record: bool) -> None:
    """Print the results table and, if `record`, append it to bench/RESULTS.md (newest last)."""
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
