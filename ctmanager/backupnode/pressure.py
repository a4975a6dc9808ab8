"""Whether the storage node is too busy to back up now: the kernel's I/O pressure
(PSI, /proc/pressure/io: the share of the last 10 s in which some task waited
on I/O) where the kernel has it, else the load average per CPU. Backups wait
while it is over the limit, up to a bound: a restore point may come late, the
application's I/O does not."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

IO_PRESSURE = Path("/proc/pressure/io")
LOADAVG = Path("/proc/loadavg")


@dataclass(frozen=True)
class Busy:
    busy: bool
    why: str     # "io pressure 42.0 % (limit 30 %)", "load 3.10 per CPU (limit 2.0)", ...


def io_some_avg10(text: str) -> float | None:
    """The `some avg10` percentage of /proc/pressure/io, None if absent or garbled."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "some":
            for f in fields[1:]:
                key, _, value = f.partition("=")
                if key == "avg10":
                    try:
                        return float(value)
                    except ValueError:
                        return None
    return None


def load1(text: str) -> float | None:
    try:
        return float(text.split()[0])
    except (IndexError, ValueError):
        return None


def judge(psi_text: str | None, loadavg_text: str, cpus: int, io_limit: float, load_limit: float) -> Busy:
    psi = io_some_avg10(psi_text) if psi_text is not None else None
    if psi is not None:
        return Busy(psi > io_limit, f"io pressure {psi:.1f} % (limit {io_limit:g} %)")
    load = load1(loadavg_text)
    if load is None:
        return Busy(False, "no io pressure or load average to go by")
    per = load / max(1, cpus)
    return Busy(per > load_limit, f"load {per:.2f} per CPU (limit {load_limit:g})")


def now(io_limit: float, load_limit: float) -> Busy:
    """This machine's, read now."""
    try:
        psi: str | None = IO_PRESSURE.read_text()
    except OSError:  # no PSI in this kernel (or it is switched off: psi=0)
        psi = None
    try:
        load = LOADAVG.read_text()
    except OSError:
        load = ""
    return judge(psi, load, os.cpu_count() or 1, io_limit, load_limit)
