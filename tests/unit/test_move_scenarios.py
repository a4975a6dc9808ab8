"""Tenant moves in the simulator: the scenario folders of tests/scenarios/moves
(PVE's cmdlist + expected log), each played by the real daemons of two racks on
one store, with the DC's invariants checked at every step."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ctmanager.reconcile import release
from ctmanager.sim.scenario import play_dc
from ctmanager.store import loop

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


def test_the_races_are_caught_when_down_is_inferred_rather_than_proved(monkeypatch: pytest.MonkeyPatch) -> None:
    """The negative control: with both guards taken away — the certificate
    replaced by an inference (down as soon as held) and starts journaled without
    the re-check against the CT's row, as before this design — interleaving A runs
    the tenant in both racks again, and the simulator says so."""
    def inferred(ctids, intents, listed, dead, busy, epoch, now, action_timeout):  # type: ignore[no-untyped-def]
        return release.Verdict(True, "")

    monkeypatch.setattr(release, "verdict", inferred)
    monkeypatch.setattr(loop, "_may_start", lambda store, a, slot: True)
    folder = next(p for p in FOLDERS if p.name.startswith("a-"))
    dc = play_dc(folder)
    assert any("UP on" in v or "stale" in v or "sealed" in v for v in dc.violations), "\n".join(dc.lines)
