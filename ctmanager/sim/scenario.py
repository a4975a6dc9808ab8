"""Scenario directories, like Proxmox HA's regression tests: a rack, a timed
list of faults, and the event log it must produce.

    tests/scenarios/fencing/NAME/
      setup.toml    hns, cts, end (s), reboot_after, fence_command, managers, [timers], [weather]
      cmdlist       "SECONDS COMMAND" lines (ctmanager/sim/commands.py)
      expected.log  the log, diffed (CTMANAGER_UPDATE_GOLDEN=1 rewrites it)
"""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..fencing.timers import FenceTimers
from .commands import SimError, parse_cmdlist, run
from .rack import Setup, SimRack
from .world import Weather

if TYPE_CHECKING:
    from .dc import SimDc

KEYS = {"hns", "cts", "end", "seed", "reboot_after", "timers", "weather", "description", "fence_command", "managers",
        "tenants"}


def load(folder: Path) -> tuple[Setup, list[tuple[float, str]], float]:
    try:
        data = tomllib.loads((folder / "setup.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SimError(f"{folder}/setup.toml: {exc}") from None
    unknown = set(data) - KEYS
    if unknown:
        raise SimError(f"{folder}/setup.toml: unknown key(s) {', '.join(sorted(unknown))}")
    reboot = data.get("reboot_after", "never")
    try:
        setup = Setup(hns=int(data.get("hns", 3)), cts=int(data.get("cts", 6)), seed=int(data.get("seed", 0)),
                      timers=FenceTimers(**data.get("timers", {})), weather=Weather(**data.get("weather", {})),
                      reboot_after=None if reboot == "never" else float(reboot),
                      fence_command=bool(data.get("fence_command", False)), managers=int(data.get("managers", 1)))
    except (TypeError, ValueError) as exc:
        raise SimError(f"{folder}/setup.toml: {exc}") from None
    if not 1 <= setup.hns <= 50 or not 0 <= setup.cts <= 1000 or not 1 <= setup.managers <= 5:
        raise SimError(f"{folder}/setup.toml: hns must be 1-50, cts 0-1000 and managers 1-5")
    schedule = parse_cmdlist((folder / "cmdlist").read_text(), f"{folder}/cmdlist")
    return setup, schedule, float(data.get("end", 120))


def play(folder: Path) -> SimRack:
    setup, schedule, end = load(folder)
    rack = SimRack(setup)
    run(rack, schedule, end)
    rack.log("end", "; ".join(rack.converged()) or "every ADMST UP CT runs on exactly one HN")
    return rack


def play_dc(folder: Path) -> SimDc:
    """A scenario of tests/scenarios/moves/: a DC of two racks (sim/dc.py); its
    setup.toml may also say `tenants` (default 1); defaults: 3 HNs and 2 CTs per
    rack, one manager per rack."""
    from .dc import SimDc
    from .dc import run as run_dc

    data = tomllib.loads((folder / "setup.toml").read_text())
    setup, schedule, end = load(folder)
    if "hns" not in data or "cts" not in data or "managers" not in data:
        setup = replace(setup, hns=int(data.get("hns", 3)), cts=int(data.get("cts", 2)),
                        managers=int(data.get("managers", 1)))
    dc = SimDc(setup, int(data.get("tenants", 1)))
    run_dc(dc, schedule, end)
    dc.log("end", "; ".join(dc.converged()) or "every move ended; every ADMST UP CT runs on exactly one HN")
    return dc
