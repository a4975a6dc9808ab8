"""The storage node's record of restore points: states against the RPO, a torn
line survived, the newest per CT after a restart, compaction."""

from __future__ import annotations

from pathlib import Path

from ctmanager.backupnode import borg, catalogue
from ctmanager.backupnode.catalogue import Catalogue, Point

T = 1796250000.0


def _point(at: float, *ctids: int) -> Point:
    return Point(borg.archive_name("storage-101-4", at), at, ctids, 3, 300, 30)


def test_each_ct_is_ok_late_or_never_against_the_rpo_and_alarms_past_twice_it(tmp_path: Path) -> None:
    c = Catalogue(tmp_path)
    c.record(_point(T, 1005, 1006))
    c.record(_point(T + 50, 1005))
    states = {s.ctid: s for s in c.states([1005, 1006, 1007], T + 100, rpo=60)}
    assert (states[1005].state, states[1005].age, states[1005].alarm) == ("OK", 50.0, False)
    assert (states[1006].state, states[1006].alarm) == ("LATE", False)
    assert (states[1007].state, states[1007].alarm, states[1007].newest) == ("NEVER", True, None)
    assert c.states([1006], T + 121, rpo=60)[0].alarm


def test_a_restart_reads_the_newest_per_ct_back_and_skips_a_torn_line(tmp_path: Path) -> None:
    c = Catalogue(tmp_path)
    c.record(_point(T + 10, 1005))
    c.record(_point(T, 1005, 1006))  # recorded late (an older cycle's): not the newest of 1005
    with open(c.path, "a") as f:
        f.write('{"archive": "storage-101-4-2026-12-02T22:')  # the power went
    again = Catalogue(tmp_path)
    assert again.newest[1005].at == T + 10 and again.newest[1006].at == T and again.count == 2
    with open(c.path, "a") as f:
        f.write('\n{"archive": "not-ours", "at": 1, "ctids": [1005]}\n')
    assert Catalogue(tmp_path).newest[1005].at == T + 10


def test_a_long_log_is_compacted_to_the_newest_points(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(catalogue, "COMPACT_OVER", 1000)
    c = Catalogue(tmp_path)
    for i in range(50):
        c.record(_point(T + i, 1005 + i % 3))
    big = c.path.stat().st_size
    again = Catalogue(tmp_path)
    assert c.path.stat().st_size < big / 10
    assert {k: p.at for k, p in again.newest.items()} == {1005: T + 48, 1006: T + 49, 1007: T + 47}
