"""The pre-backup hook: a CT running `hook.serve` (its side, as `ctbackup hook --
CMD` runs it) has CMD run before its backup and the restore point made after the
answer; it is asked at most every hook_every; a CT whose hook does not answer is
backed up anyway after hook_timeout, with a log line; no marker, no question."""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from pathlib import Path

from ctmanager.backupnode import hook
from tests.unit.test_backup_cycle import T, _cycle


def test_the_hook_runs_before_the_backup_and_at_most_every_hook_every(tmp_path: Path) -> None:
    cyc, fake, log = _cycle(tmp_path, [False])
    cyc.cfg = dataclasses.replace(cyc.cfg, hook_every=300, hook_timeout=10)
    ct = tmp_path / "data" / "1005"
    stop = threading.Event()
    side = threading.Thread(target=hook.serve, args=(ct, [sys.executable, "-c",
                            "import time; open('dump.sql', 'a').write(str(time.time()) + '\\n')"], stop.is_set))
    side.start()
    try:
        deadline = time.monotonic() + 5
        while not hook.wanted(ct) and time.monotonic() < deadline:
            time.sleep(0.05)
        cyc.dirty.mark(1005, T)
        out = cyc.step(T + 3)
        assert out is not None and out.kind == "done"
        assert (ct / "dump.sql").read_text().count("\n") == 1  # run once, before borg was
        assert [c for c in fake.calls if "create" in c]
        cyc.dirty.mark(1005, T + 10)
        assert cyc.step(T + 13).kind == "done"  # type: ignore[union-attr]
        assert (ct / "dump.sql").read_text().count("\n") == 1  # within hook_every: not asked again
        cyc.dirty.mark(1005, T + 400)
        assert cyc.step(T + 403).kind == "done"  # type: ignore[union-attr]
        assert (ct / "dump.sql").read_text().count("\n") == 2
    finally:
        stop.set()
        side.join()
    assert not hook.wanted(ct)  # the hook stopped: its marker is gone
    assert not any("hook" in line for line in log), log


def test_a_hook_that_does_not_answer_is_waited_for_hook_timeout_then_backed_up_anyway(tmp_path: Path) -> None:
    cyc, fake, log = _cycle(tmp_path, [False])
    cyc.cfg = dataclasses.replace(cyc.cfg, hook_timeout=1)
    (tmp_path / "data" / "1005" / ".ctbackup").mkdir()
    (tmp_path / "data" / "1005" / ".ctbackup" / "hook").write_text("4242\n")  # left by a hook killed -9
    cyc.dirty.mark(1005, T)
    cyc.dirty.mark(1006, T)
    started = time.monotonic()
    out = cyc.step(T + 3)
    assert out is not None and out.kind == "done" and out.ctids == (1005, 1006)
    assert 0.9 < time.monotonic() - started < 5
    assert log == ["CT 1005: its pre-backup hook did not answer in 1 s; backed up as it is"]
    point = cyc.catalogue.newest[1005]
    assert point.at >= T + 3.9  # as of after the wait
