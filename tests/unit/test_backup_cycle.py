"""The backup cycle's policy with borg faked (the argv it would run is checked):
one archive for the changed CTs, held while busy (up to max_hold), a failing
repository keeps CTs due and backs off, a missing one is initialised."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ctmanager.backupnode import borg
from ctmanager.backupnode.catalogue import Catalogue
from ctmanager.backupnode.config import BackupConfig, Limits
from ctmanager.backupnode.daemon import Cycle
from ctmanager.backupnode.pressure import Busy
from ctmanager.backupnode.watch import Dirty

T = 1796250000.0


class FakeBorg:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.fail: str | None = None
        self.missing = False

    def __call__(self, argv: list[str], cwd: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        cmd = argv[argv.index("borg") + 1]
        if cmd == "init":
            self.missing = False
            return subprocess.CompletedProcess(argv, 0, "", "")
        if self.missing:
            return subprocess.CompletedProcess(argv, 2, "", "Repository /r does not exist.\n")
        if self.fail:
            return subprocess.CompletedProcess(argv, 2, "", f"Remote: {self.fail}\n")
        name = next(a for a in argv if "::" in a).split("::")[1]
        out = {"archive": {"name": name, "duration": 0.1,
                           "stats": {"nfiles": 3, "original_size": 30, "deduplicated_size": 7}}}
        return subprocess.CompletedProcess(argv, 0, json.dumps(out), "")


def _cycle(tmp_path: Path, busy: list[bool]) -> tuple[Cycle, FakeBorg, list[str]]:
    for c in (1005, 1006):
        (tmp_path / "data" / str(c)).mkdir(parents=True)
    cfg = BackupConfig(str(tmp_path / "data"), "storage-101-4", str(tmp_path / "state"), 60,
                       borg.Repo("/r", str(tmp_path / "pass"), str(tmp_path / "base")),
                       Limits(upload=4 << 20, max_hold=10))
    fake, log = FakeBorg(), []
    cyc = Cycle(cfg, Catalogue(tmp_path / "state"), Dirty(settle=2, max_wait=20), log.append, fake,
                lambda: Busy(busy[0], "io pressure 90.0 % (limit 40 %)"))
    return cyc, fake, log


def test_changed_cts_go_in_one_archive_at_low_priority_and_are_recorded(tmp_path: Path) -> None:
    cyc, fake, _ = _cycle(tmp_path, [False])
    cyc.dirty.mark(1005, T)
    cyc.dirty.mark(1006, T)
    cyc.dirty.mark(4242, T)  # no such folder (removed meanwhile): skipped
    assert cyc.step(T + 1) is None
    out = cyc.step(T + 2)
    assert out is not None and out.kind == "done" and out.ctids == (1005, 1006)
    argv = fake.calls[0]
    assert argv[:7] == ["nice", "-n", "10", "ionice", "-c2", "-n", "7"]
    assert argv[-3:] == ["--", "1005", "1006"] and argv[argv.index("--upload-ratelimit") + 1] == "4096"
    assert cyc.catalogue.newest[1006].at == T + 2 and cyc.step(T + 3) is None


def test_a_busy_node_holds_backups_up_to_max_hold(tmp_path: Path) -> None:
    busy = [True]
    cyc, fake, log = _cycle(tmp_path, busy)
    cyc.dirty.mark(1005, T)
    assert cyc.step(T + 2).kind == "held"  # type: ignore[union-attr]
    assert cyc.step(T + 11).kind == "held"  # type: ignore[union-attr]
    assert cyc.step(T + 12.5).kind == "done" and "backing up anyway" in log[-1]  # type: ignore[union-attr]
    busy[0] = False
    cyc.dirty.mark(1006, T + 20)
    assert cyc.step(T + 22).kind == "done"  # type: ignore[union-attr]


def test_a_hold_ends_early_when_a_restore_point_would_outgrow_the_rpo(tmp_path: Path) -> None:
    """RPO 60 s, max_hold 10 s; the last cycle took 40 s: a CT backed up at T may be held
    only while a cycle started now still lands before T + 60 (minus the slack)."""
    busy = [False]
    cyc, fake, log = _cycle(tmp_path, busy)
    cyc.dirty.mark(1005, T)
    assert cyc.step(T + 2).kind == "done"  # type: ignore[union-attr]  # point at T + 2
    cyc.last_took = 40.0
    busy[0] = True
    cyc.dirty.mark(1005, T + 5)
    assert cyc.step(T + 8).kind == "held"  # type: ignore[union-attr]  # 8 + 5 + 40 - 2 < 60
    assert "holding backups" in log[-1] and "io pressure" in log[-1]
    out = cyc.step(T + 9)
    assert out is not None and out.kind == "held"
    out = cyc.step(T + 17.5)  # 17.5 + 5 + 40 - 2 >= 60, though held only 9.5 s of max_hold 10
    assert out is not None and out.kind == "done"
    assert "CT 1005's restore point would be older than the RPO (60 s)" in log[-1], log


def test_a_failing_repository_keeps_cts_due_backs_off_and_alarms_once(tmp_path: Path) -> None:
    cyc, fake, log = _cycle(tmp_path, [False])
    fake.fail = "ssh: connect to host 10.101.1.9 port 22: Connection refused"
    cyc.dirty.mark(1005, T)
    assert cyc.step(T + 2).kind == "failed"  # type: ignore[union-attr]
    assert cyc.step(T + 3) is None  # pausing
    assert cyc.step(T + 4.1).kind == "failed"  # type: ignore[union-attr]
    assert sum("ALARM" in line for line in log) == 1 and "Connection refused" in cyc.error
    fake.fail = None
    assert cyc.step(T + 20).kind == "done" and cyc.error == "" and "repository back" in log[-1]  # type: ignore[union-attr]


def test_a_missing_repository_is_initialised_and_the_backup_made(tmp_path: Path) -> None:
    cyc, fake, log = _cycle(tmp_path, [False])
    fake.missing = True
    cyc.dirty.mark(1005, T)
    assert cyc.step(T + 2).kind == "done"  # type: ignore[union-attr]
    assert ["borg", "init", "--encryption=repokey-blake2", "/r"] in fake.calls
    assert "initialised" in log[0]


def test_the_inventory_scan_makes_never_backed_up_cts_due(tmp_path: Path) -> None:
    cyc, fake, _ = _cycle(tmp_path, [False])
    assert cyc.rescan(T) == [1005, 1006]
    assert cyc.step(T).ctids == (1005, 1006)  # type: ignore[union-attr]


def test_a_running_restore_holds_the_daemon_and_a_dead_ones_hold_goes(tmp_path: Path) -> None:
    import os

    from ctmanager.backupnode.restore import holding

    cyc, fake, _ = _cycle(tmp_path, [False])
    cyc.dirty.mark(1005, T)
    with holding(cyc.cfg):  # this process: alive
        assert cyc.held_by() == os.getpid() and cyc.step(T + 3) is None and fake.calls == []
    (tmp_path / "state" / "hold-999999999").write_text("999999999\n")  # no such process
    out = cyc.step(T + 4)
    assert out is not None and out.kind == "done" and not (tmp_path / "state" / "hold-999999999").exists()
