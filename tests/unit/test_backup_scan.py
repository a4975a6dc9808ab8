"""The inventory scan over a real folder tree: new CTs, changed files, deletions."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ctmanager.backupnode import scan


def _age(root: Path, seconds: float) -> None:
    """Set every entry's mtime back (ctime cannot be set: the scan's `since` moves instead)."""
    old = time.time() - seconds
    for p in [root, *root.rglob("*")]:
        os.utime(p, (old, old), follow_symlinks=False)


def test_new_changed_and_deleted_content_is_due_and_untouched_content_is_not(tmp_path: Path) -> None:
    for ctid in (1005, 1006, 1007):
        (tmp_path / str(ctid) / "deep").mkdir(parents=True)
        (tmp_path / str(ctid) / "deep" / "f").write_text("x")
    (tmp_path / "lost+found").mkdir()
    _age(tmp_path, 3600)
    since = time.time_ns() + scan.SLACK_NS  # "the newest restore point began after all that"
    assert [c for c, _ in scan.ct_folders(tmp_path)] == [1005, 1006, 1007]
    backed = {1005: since, 1006: since}
    assert scan.due(tmp_path, backed) == [1007]  # never backed up
    time.sleep(0.02)
    (tmp_path / "1005" / "deep" / "f").write_text("changed")
    (tmp_path / "1006" / "deep" / "f").unlink()  # a deletion changes its folder
    assert scan.due(tmp_path, backed) == [1005, 1006, 1007]
    assert scan.due(tmp_path, {1005: time.time_ns() + scan.SLACK_NS, 1006: time.time_ns() + scan.SLACK_NS,
                               1007: time.time_ns() + scan.SLACK_NS}) == []
    assert scan.due(tmp_path / "missing", {}) == []
