"""The backup daemon's change detection: the dirty-set policy (times as arguments)
and the real inotify over a data folder."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ctmanager.backupnode.watch import Dirty, Watcher, ctid_of


def test_a_path_belongs_to_the_ct_of_its_first_folder() -> None:
    assert ctid_of("/srv/data/1005/www/index.html", "/srv/data") == 1005
    assert ctid_of("/srv/data/1005", "/srv/data/") == 1005
    for other in ("/srv/data/lost+found/x", "/srv/data", "/srv/database/1005/x", "/srv/data/10e5/x",
                  "/srv/data/1234567890/x"):
        assert ctid_of(other, "/srv/data") is None


def test_a_burst_becomes_one_backup_once_quiet_and_a_steady_writer_is_not_starved() -> None:
    d = Dirty(settle=2.0, max_wait=20.0)
    d.mark(1005, 100.0)
    d.mark(1005, 101.0)
    assert d.take(102.5) == []          # still settling
    assert d.take(103.0) == [1005]      # quiet for 2 s
    assert d.take(103.1) == [] and d.pending() == []
    for t in range(200, 221):            # a write every second, never quiet
        d.mark(1006, float(t))
        if t < 220:
            assert d.take(float(t) + 0.5) == []
    assert d.take(220.5) == [1006]      # 20 s after its first change


def test_lost_events_and_failed_backups_make_cts_due_at_once() -> None:
    d = Dirty()
    d.mark_all([1005, 1006], 50.0)
    assert d.take(50.0) == [1005, 1006] and d.overflows == 1
    d.put_back([1006], 60.0)
    d.mark(1007, 60.0)
    assert d.take(60.0) == [1006]


def test_inotify_sees_writes_deep_in_a_ct_and_in_folders_made_after_the_start(tmp_path: Path) -> None:
    (tmp_path / "1005" / "a").mkdir(parents=True)
    seen: set[int] = set()
    lost: list[int] = []
    hit = threading.Event()

    def changed(ctid: int) -> None:
        seen.add(ctid)
        hit.set()

    w = Watcher(tmp_path, changed, lambda: lost.append(1))
    w.start()
    try:
        def wait_for(ctid: int, write: Path) -> None:
            """Write `write` until an event of `ctid` arrives (a folder made a moment
            ago is watched once pyinotify has heard of it)."""
            deadline = time.monotonic() + 10
            while ctid not in seen and time.monotonic() < deadline:
                write.write_text(str(time.monotonic()))
                hit.wait(0.05)
                hit.clear()
            assert ctid in seen, (ctid, seen)

        wait_for(1005, tmp_path / "1005" / "a" / "f")
        (tmp_path / "1006" / "new" / "deeper").mkdir(parents=True)   # a CT's folder made now
        wait_for(1006, tmp_path / "1006" / "new" / "deeper" / "g")
        # a whole tree moved in (an in-place restore's swap) is watched too
        (tmp_path / ".staging" / "1007" / "sub").mkdir(parents=True)
        (tmp_path / ".staging" / "1007").rename(tmp_path / "1007")
        time.sleep(0.3)  # the move's own event, before the writes in the moved tree
        seen.clear()
        wait_for(1007, tmp_path / "1007" / "sub" / "h")
        # the pre-backup handshake's files are not changes
        (tmp_path / "1005" / ".ctbackup").mkdir()
        time.sleep(0.3)
        seen.clear()
        (tmp_path / "1005" / ".ctbackup" / "request").write_text("n1")
        (tmp_path / "1005" / ".ctbackup" / "ready").write_text("n1")
        time.sleep(0.5)
        assert 1005 not in seen
        assert lost == []
    finally:
        w.stop()
