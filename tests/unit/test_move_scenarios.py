"""Tenant moves in the simulator: the scenario folders of tests/scenarios/moves
(PVE's cmdlist + expected log), each played by the real daemons of two racks on
one store, with the DC's invariants checked at every step."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ctmanager.sim.scenario import play_dc

FOLDERS = sorted(p for p in (Path(__file__).parents[1] / "scenarios" / "moves").iterdir() if p.is_dir())


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_move_scenario(folder: Path) -> None:
    dc = play_dc(folder)
    log = "\n".join(dc.lines) + "\n"
    assert not dc.violations, log
    assert not dc.converged(), log
    expected = folder / "expected.log"
    if os.environ.get("CTMANAGER_UPDATE_GOLDEN") or not expected.exists():
        expected.write_text(log)
    assert log == expected.read_text()

