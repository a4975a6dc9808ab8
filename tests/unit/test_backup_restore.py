"""Restores with the real borg (a local repository): a point in time into a folder,
in place, a bad choice refused in one line, and a deleted archive found by verify."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from ctmanager.backupnode import borg, restore
from ctmanager.backupnode.catalogue import Catalogue, Point
from ctmanager.backupnode.config import BackupConfig, Limits
from ctmanager.errors import InputError

T = 1796250000.0


def _sums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def node(tmp_path: Path) -> tuple[BackupConfig, Catalogue]:
    (tmp_path / "pass").write_text("s3cret\n")
    (tmp_path / "state").mkdir()
    cfg = BackupConfig(str(tmp_path / "data"), "storage-101-4", str(tmp_path / "state"), 60,
                       borg.Repo(str(tmp_path / "repo"), str(tmp_path / "pass"), str(tmp_path / "base")), Limits())
    return cfg, Catalogue(tmp_path / "state")


def _backup(cfg: BackupConfig, cat: Catalogue, at: float, ctids: list[int]) -> str:
    env = {**os.environ, **borg.env(cfg.repo)}
    if not Path(cfg.repo.location).exists():
        subprocess.run(borg.init_argv(cfg.repo), env=env, check=True, capture_output=True)
    name = borg.archive_name(cfg.node, at)
    p = subprocess.run(borg.create_argv(cfg.repo, name, ctids), cwd=cfg.data, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    cat.record(Point(name, at, tuple(ctids)))
    return name


def test_a_point_in_time_and_an_in_place_restore_give_back_what_was_there(node, tmp_path: Path) -> None:
    cfg, cat = node
    ct = Path(cfg.data) / "1005"
    (ct / "sub").mkdir(parents=True)
    (ct / "sub" / "a").write_bytes(os.urandom(5000))
    (ct / "b").write_text("first")
    before = _sums(ct)
    _backup(cfg, cat, T, [1005])
    (ct / "b").write_text("second")
    (ct / "sub" / "a").unlink()
    second = _sums(ct)
    _backup(cfg, cat, T + 60, [1005])
    points = restore.archives(cfg)
    chosen = restore.pick(points, 1005, T + 30, None)  # --at between the two
    out = restore.extract(cfg, chosen, 1005, tmp_path / "out")
    assert _sums(out) == before
    (ct / "c").write_text("a mistake")
    restore.in_place(cfg, restore.pick(points, 1005, None, None), 1005)  # the newest
    assert _sums(ct) == second and not list(Path(cfg.data).glob(".ctbackup-*"))
    with pytest.raises(InputError, match="no restore point at or before"):
        restore.pick(points, 1005, T - 1, None)
    with pytest.raises(InputError, match="no restore point 'x' of CT 1005"):
        restore.pick(points, 1005, None, "x")
    with pytest.raises(InputError, match="exists: restore into an empty folder"):
        restore.extract(cfg, chosen, 1005, tmp_path / "out")


def test_verify_reads_everything_and_names_an_archive_deleted_behind_our_back(node) -> None:
    cfg, cat = node
    (Path(cfg.data) / "1006").mkdir(parents=True)
    (Path(cfg.data) / "1006" / "f").write_text("x")
    first = _backup(cfg, cat, T, [1006])
    _backup(cfg, cat, T + 1, [1006])
    assert restore.verify(cfg, cat.recorded()) == {"checked": True, "check_error": "", "archives": 2, "missing": []}
    env = {**os.environ, **borg.env(cfg.repo)}
    subprocess.run(["borg", "delete", f"{cfg.repo.location}::{first}"], env=env, check=True, capture_output=True)
    assert restore.verify(cfg, cat.recorded())["missing"] == [first]


def test_a_quiet_ct_is_not_read_again_after_many_cycles_of_others(node) -> None:
    """borg forgets a file after 20 runs that did not see it unless told otherwise; the
    daemon's runs take only the CTs that changed, so a quiet CT must stay known."""
    cfg, cat = node
    for ctid in (1005, 1006):
        (Path(cfg.data) / str(ctid)).mkdir(parents=True)
        (Path(cfg.data) / str(ctid) / "f").write_bytes(os.urandom(3000))
    # borg never remembers the run's newest file (timestamp granularity): another one after f
    (Path(cfg.data) / "1005" / "newest").write_bytes(b"x")
    _backup(cfg, cat, T, [1005])
    for i in range(22):
        (Path(cfg.data) / "1006" / "f").write_bytes(os.urandom(3000))
        _backup(cfg, cat, T + 1 + i, [1006])
    argv = borg.create_argv(cfg.repo, borg.archive_name(cfg.node, T + 100), [1005])
    p = subprocess.run([*argv[:2], "--list", *argv[2:]], cwd=cfg.data, env={**os.environ, **borg.env(cfg.repo)},
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "U 1005/f" in p.stderr.splitlines(), p.stderr  # U: unchanged, known from the files cache
