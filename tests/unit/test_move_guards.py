"""Interleaving A against each guard alone: the simulator shows the race when
every guard is taken away (so the scenario can catch it), and that any one of
them is enough to prevent it — the design's defence in depth, proved rather
than argued.

The guards: the leaving rack leader's certificate (reconcile/release.py), the
re-check of every start inside the journal transaction (store/loop.journal),
and the sealed /data that ctagent refuses to start on (agent/apply.check_seal).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ctmanager.agent import apply as applying
from ctmanager.reconcile.moving import Release
from ctmanager.sim.scenario import play_dc
from ctmanager.store import loop, moveacks

A = Path(__file__).parents[1] / "scenarios" / "moves" / "a-start-decided-before-the-hold-recorded-after"
GUARDS = ("certificate", "recheck", "seal")


def take_away(monkeypatch: pytest.MonkeyPatch, guard: str) -> None:
    if guard == "certificate":  # the runner decides "down" by itself, as the old mover did
        monkeypatch.setattr(moveacks, "release_of", lambda store, move_id, rack: Release(rack, 0, 1 << 62, True, ""))
    elif guard == "recheck":
        monkeypatch.setattr(loop, "_may_start", lambda store, a, slot: True)
    else:
        monkeypatch.setattr(applying, "check_seal", lambda config, node, spec: None)


def test_without_any_guard_interleaving_a_runs_the_tenant_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    for guard in GUARDS:
        take_away(monkeypatch, guard)
    dc = play_dc(A)
    assert any("sealed /data" in v or "stale /data" in v or " while UP on " in v for v in dc.violations), \
        "\n".join(dc.lines)


@pytest.mark.parametrize("kept", GUARDS)
def test_any_one_guard_alone_prevents_it(monkeypatch: pytest.MonkeyPatch, kept: str) -> None:
    for guard in GUARDS:
        if guard != kept:
            take_away(monkeypatch, guard)
    dc = play_dc(A)
    # "started ... on its sealed /data" is the seal guard's own invariant (ctagent refuses): without that guard, a
    # start there is harmless as long as the others keep the tenant in one rack and no write is lost
    own = "on its sealed /data" if kept != "seal" else "\0"
    assert not [v for v in dc.violations if own not in v], "\n".join(dc.lines)
    assert not dc.converged(), "\n".join(dc.lines)
