"""The backup daemon's borg facts: its command lines and parsers, against output
captured from borg 1.2.4 and against the real borg (a local repository)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from ctmanager.backupnode import borg
from ctmanager.errors import InputError

# `borg list --format "{name}{TAB}{comment}{NL}" REPO` on a repository with two
# archives of someone else and one of ours (borg 1.2.4, Debian 12)
LISTED = """a2\t
a3\t
storage-101-4-2026-12-02T22:41:00.123456Z\tcts 1005 1006
storage-101-4-2026-12-02T22:40:59.000001Z\tcts 1005
"""
# `borg create --json` (trimmed to what the parser reads, values as printed)
CREATED = """{"archive": {"command_line": ["/usr/bin/borg", "create", "--json", "repo::a3", "data/1005"],
 "duration": 0.055504, "end": "2026-12-02T22:39:33.000000", "id": "78bb2b64", "name": "a3",
 "start": "2026-12-02T22:39:33.000000",
 "stats": {"compressed_size": 116827, "deduplicated_size": 686, "nfiles": 2001, "original_size": 30812}},
 "cache": {}, "encryption": {"mode": "repokey-blake2"}, "repository": {"id": "x", "location": "/tmp/repo"}}"""


def test_archive_names_carry_the_exact_utc_start_and_round_trip() -> None:
    name = borg.archive_name("storage-101-4", 1796250060.123456)
    assert name == "storage-101-4-2026-12-02T22:21:00.123456Z"
    node, at = borg.parse_name(name)  # type: ignore[misc]
    assert node == "storage-101-4" and abs(at - 1796250060.123456) < 1e-6
    for other in ("a2", "storage-101-4", "storage-101-4-2026-12-02 22:21:00", "x-2026-12-02T22:21:00Z"):
        assert borg.parse_name(other) is None


def test_a_listing_gives_our_archives_oldest_first_and_each_cts_points() -> None:
    archives = borg.parse_list(LISTED)
    assert [a.ctids for a in archives] == [(1005,), (1005, 1006)]
    assert [a.name for a in borg.points(archives, 1006)] == ["storage-101-4-2026-12-02T22:41:00.123456Z"]
    at = archives[0].at
    assert borg.newest_before(archives, 1005, at + 0.5) == archives[0]
    assert borg.newest_before(archives, 1005, at + 2) == archives[1]
    assert borg.newest_before(archives, 1006, at) is None and borg.newest_before(archives, 1007) is None


def test_create_output_is_parsed_and_garbage_is_one_line() -> None:
    c = borg.parse_create(CREATED)
    assert (c.name, c.files, c.original, c.deduplicated) == ("a3", 2001, 30812, 686)
    for bad in ("", "[]", '{"archive": {"name": "x"}}', "Traceback..."):
        with pytest.raises(InputError, match="borg create printed no archive summary"):
            borg.parse_create(bad)


def test_command_lines_are_argv_with_the_passphrase_out_of_them(tmp_path: Path) -> None:
    repo = borg.Repo("ssh://ctbackup@10.101.1.9/./eu-west/storage-101-4", str(tmp_path / "pass"),
                     str(tmp_path / "base"), str(tmp_path / "key"), str(tmp_path / "known"))
    argv = borg.create_argv(repo, "n", [1006, 1005], upload_kib=2048)
    assert argv[-3:] == ["--", "1005", "1006"] and "--upload-ratelimit" in argv and "cts 1005 1006" in argv
    e = borg.env(repo)
    assert "StrictHostKeyChecking=yes" in e["BORG_RSH"] and "BORG_PASSPHRASE" not in e
    assert e["BORG_PASSCOMMAND"] == f"cat {tmp_path / 'pass'}"
    with pytest.raises(InputError):
        borg.create_argv(repo, "n", [])
    with pytest.raises(InputError):
        borg.env(borg.Repo("/r", "pass;rm -rf /", str(tmp_path)))


def test_the_real_borg_backs_up_lists_and_restores_one_ct(tmp_path: Path) -> None:
    data, base = tmp_path / "data", tmp_path / "base"
    for ctid, n in ((1005, 50), (1006, 5)):
        (data / str(ctid)).mkdir(parents=True)
        for i in range(n):
            (data / str(ctid) / f"f{i}").write_bytes(os.urandom(1000))
    (tmp_path / "pass").write_text("correct horse\n")
    repo = borg.Repo(str(tmp_path / "repo"), str(tmp_path / "pass"), str(base))
    env = {**os.environ, **borg.env(repo)}

    def run(argv: list[str], cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == borg.OK, p.stderr
        return p

    run(borg.init_argv(repo))
    first = borg.archive_name("storage-101-4", 1796250000.0)
    created = borg.parse_create(run(borg.create_argv(repo, first, [1005, 1006]), data).stdout)
    assert created.name == first and created.files == 55 and 55_000 <= created.original < 60_000
    (data / "1005" / "f0").write_bytes(b"changed")
    second = borg.archive_name("storage-101-4", 1796250060.0)
    again = borg.parse_create(run(borg.create_argv(repo, second, [1005]), data).stdout)
    assert again.deduplicated < 10_000  # only the change is new
    archives = borg.parse_list(run(borg.list_argv(repo)).stdout)
    assert [(a.name, a.ctids) for a in archives] == [(first, (1005, 1006)), (second, (1005,))]
    target = tmp_path / "restore"
    target.mkdir()
    run(borg.extract_argv(repo, first, 1005), target)
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (target / "1005").iterdir()}
    assert len(digest) == 50 and not (target / "1006").exists()
    assert digest["f0"] != hashlib.sha256(b"changed").hexdigest()  # as it was at the first point
    assert "correct horse" not in " ".join(borg.create_argv(repo, first, [1005]))
