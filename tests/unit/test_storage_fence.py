"""Fencing a tenant move's data: `ctstorage seal|unseal|pull --token` as a process,
with the real rsync (over a local stand-in for ssh), against temp folders, and the
manager's client of it (executor/storage.py) on the same processes. ctagent's
refusal of a sealed /data is in test_agent.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctmanager.executor.ssh import Output, SshSettings
from ctmanager.executor.storage import StaleToken, StorageFailed, StorageNodes
from tests.conftest import ROOT

CTID = 1005
CLI = [sys.executable, "-m", "ctmanager.storagenode.cli"]
# what rsync's --rsh runs: drops ssh's options and the host, runs the remote command here
FAKE_SSH = """#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    -i|-l|-o|-p) shift 2 ;;
    -*) shift ;;
    *) shift; break ;;
  esac
done
exec sh -c "$*"
"""


@pytest.fixture
def node(tmp_path: Path) -> dict[str, Path]:
    """A storage node: its config, its <data>, and a source /data to pull from."""
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed (bash scripts/setup.sh)")
    data, source, bin_ = tmp_path / "data", tmp_path / "peer" / str(CTID), tmp_path / "bin"
    for d in (data, source, bin_):
        d.mkdir(parents=True)
    (bin_ / "ssh").write_text(FAKE_SSH)
    (bin_ / "ssh").chmod(0o755)
    config = tmp_path / "ctstorage.toml"
    config.write_text(f'data = "{data}"\n[ssh]\nkey_file = "{tmp_path}/key"\nknown_hosts = "{tmp_path}/known"\n'
                      f'control_dir = "{tmp_path}/run"\n')
    return {"config": config, "data": data, "source": source, "bin": bin_, "run": tmp_path / "run"}


def env(node: dict[str, Path]) -> dict[str, str]:
    return {**os.environ, "PATH": f"{node['bin']}:{os.environ['PATH']}", "CTSTORAGE_CONFIG": str(node["config"])}


def ctstorage(node: dict[str, Path], *args: str) -> tuple[int, dict]:
    p = subprocess.run([*CLI, *args], cwd=ROOT, env=env(node), capture_output=True, text=True, timeout=120)
    assert p.stdout.count("\n") == 1 and "Traceback" not in p.stderr, p.stdout + p.stderr
    return p.returncode, json.loads(p.stdout)


def pull(node: dict[str, Path], token: int | str, *more: str) -> tuple[int, dict]:
    return ctstorage(node, "pull", str(CTID), "--from", "127.0.0.1", "--path", str(node["source"]),
                     "--token", str(token), *more)


def test_seal_and_unseal_are_idempotent_and_a_stale_unseal_is_refused(node: dict[str, Path]) -> None:
    marker = node["data"] / f"{CTID}.sealed"
    code, out = ctstorage(node, "seal", str(CTID), "--token", "7")
    assert (code, out["ok"], out["sealed"], out["changed"], out["token"]) == (0, True, True, True, 7)
    first = json.loads(marker.read_text())
    assert first["token"] == 7 and abs(first["sealed_at"] - time.time()) < 60
    assert not (node["data"] / str(CTID)).exists()  # beside the CT's folder, never in it
    code, out = ctstorage(node, "seal", str(CTID), "--token", "7")
    assert (code, out["changed"], json.loads(marker.read_text())) == (0, False, first)
    code, out = ctstorage(node, "seal", str(CTID), "--token", "5")  # sealing is always safe: the seal stays 7
    assert (code, out["changed"], out["token"], json.loads(marker.read_text())["token"]) == (0, False, 7, 7)
    code, out = ctstorage(node, "seal", str(CTID), "--token", "9")  # a newer leader's: it takes the seal over
    assert (code, out["token"], json.loads(marker.read_text())) == (0, 9, {**first, "token": 9})

    code, out = ctstorage(node, "unseal", str(CTID), "--token", "8")
    assert (code, out["ok"], out["stale"], out["token"]) == (1, False, True, 9)
    assert "stale token 8" in out["error"] and marker.exists()
    code, out = ctstorage(node, "unseal", str(CTID), "--token", "9")
    assert (code, out["sealed"], out["changed"], marker.exists()) == (0, False, True, False)
    code, out = ctstorage(node, "unseal", str(CTID), "--token", "1")  # nothing sealed: nothing to refuse
    assert (code, out["changed"]) == (0, False)
    assert [p.name for p in node["data"].iterdir()] == []  # no temp file left behind


def test_a_marker_ctstorage_did_not_write_still_seals_and_is_left_alone(node: dict[str, Path]) -> None:
    marker = node["data"] / f"{CTID}.sealed"
    marker.write_text("by hand\n")
    code, out = ctstorage(node, "unseal", str(CTID), "--token", "99")
    assert code == 1 and "not a seal ctstorage wrote" in out["error"] and "stale" not in out
    assert marker.read_text() == "by hand\n"
    marker.unlink()
    marker.symlink_to(node["data"] / "elsewhere")
    code, out = ctstorage(node, "seal", str(CTID), "--token", "3")
    assert code == 1 and "symbolic link" in out["error"] and not (node["data"] / "elsewhere").exists()


def test_a_stale_pull_is_refused_and_leaves_the_data_untouched(node: dict[str, Path]) -> None:
    (node["source"] / "f").write_text("one\n")
    code, out = pull(node, 5)
    assert (code, out["ok"], out["token"], out["files_transferred"]) == (0, True, 5, 1), out
    target = node["data"] / str(CTID)
    assert (target / "f").read_text() == "one\n"
    assert (node["data"] / ".tokens" / str(CTID)).read_text() == "5\n"

    (node["source"] / "f").write_text("two\n")
    (node["source"] / "g").write_text("new\n")
    code, out = pull(node, 4)  # a former leader's, late
    assert (code, out["ok"], out["stale"], out["token"]) == (1, False, True, 5)
    assert out["error"].startswith("stale token 4")
    assert (target / "f").read_text() == "one\n" and not (target / "g").exists()
    assert (node["data"] / ".tokens" / str(CTID)).read_text() == "5\n"

    code, out = pull(node, 5)  # the same leader again (a retry): allowed
    assert code == 0 and (target / "g").read_text() == "new\n"
    (node["source"] / "f").write_text("three\n")
    code, out = pull(node, 8)  # a newer leader's
    assert (code, out["token"]) == (0, 8) and (target / "f").read_text() == "three\n"
    assert (node["data"] / ".tokens" / str(CTID)).read_text() == "8\n"
    assert pull(node, 7)[1]["stale"] is True


def test_a_stale_pull_never_creates_the_folder(node: dict[str, Path]) -> None:
    (node["data"] / ".tokens").mkdir()
    (node["data"] / ".tokens" / str(CTID)).write_text("3\n")
    code, out = pull(node, 2)
    assert code == 1 and out["stale"] is True and not (node["data"] / str(CTID)).exists()


def test_a_newer_pull_stops_a_running_one_and_an_older_one_leaves_it_running(node: dict[str, Path]) -> None:
    (node["source"] / "big").write_bytes(os.urandom(2 << 20))
    slow = subprocess.Popen([*CLI, "pull", str(CTID), "--from", "127.0.0.1", "--path", str(node["source"]),
                             "--token", "5", "--bwlimit", "1024"], cwd=ROOT, env=env(node),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pidfile = node["run"] / f"pull-{CTID}.pid"
        deadline = time.monotonic() + 30
        while not pidfile.exists():
            assert time.monotonic() < deadline and slow.poll() is None, "the slow pull never started rsync"
            time.sleep(0.05)
        assert pidfile.read_text().split()[1] == "5"
        code, out = pull(node, 4)
        assert (code, out["stale"]) == (1, True) and slow.poll() is None  # it did not disturb the running pull
        code, out = pull(node, 6)
        assert code == 0, out
        assert (node["data"] / str(CTID) / "big").read_bytes() == (node["source"] / "big").read_bytes()
        got, _ = slow.communicate(timeout=30)
        assert slow.returncode == 1 and "rsync was killed" in json.loads(got)["error"]
    finally:
        if slow.poll() is None:
            slow.send_signal(signal.SIGKILL)
            slow.wait()


def test_remove_clears_the_seal_and_the_token(node: dict[str, Path]) -> None:
    (node["source"] / "f").write_text("x\n")
    assert pull(node, 5)[0] == 0
    assert ctstorage(node, "seal", str(CTID), "--token", "5")[0] == 0
    code, out = ctstorage(node, "remove", str(CTID))
    assert (code, out["removed"], sorted(out["cleared"])) == (0, True, ["seal", "token"])
    assert not (node["data"] / str(CTID)).exists() and not (node["data"] / f"{CTID}.sealed").exists()
    assert not (node["data"] / ".tokens" / str(CTID)).exists()
    code, out = ctstorage(node, "remove", str(CTID))
    assert (code, out["removed"], out["cleared"]) == (0, False, [])
    assert pull(node, 1)[0] == 0  # a new move starts from nothing


@pytest.mark.parametrize("args", [
    ("seal", str(CTID), "--token", "-1"),
    ("seal", str(CTID), "--token", "seven"),
    ("unseal", str(CTID), "--token", "1.5"),
    ("unseal", str(CTID)),
    ("pull", str(CTID), "--from", "127.0.0.1", "--path", "/x"),  # no --token: there is no unfenced pull
    ("pull", str(CTID), "--from", "127.0.0.1", "--path", "/x", "--token", "9" * 20),
    ("seal", "0", "--token", "1"),
])
def test_bad_input_is_one_line_and_exit_2(node: dict[str, Path], args: tuple[str, ...]) -> None:
    p = subprocess.run([*CLI, *args], cwd=ROOT, env=env(node), capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stdout.count("\n") == 1 and p.stderr == "", p.stdout + p.stderr
    out = json.loads(p.stdout)
    assert out["ok"] is False and out["error"].startswith("ctstorage")
    assert list(node["data"].iterdir()) == []


class LocalRemote:
    """A storage node reached without SSH: the command runs here."""

    def __init__(self, node: dict[str, Path]) -> None:
        self.node = node

    def run(self, argv: list[str], stdin: bytes = b"", timeout: float = 30.0) -> Output:
        p = subprocess.run(argv, cwd=ROOT, env=env(self.node), capture_output=True, timeout=timeout)
        return Output(p.returncode, p.stdout, p.stderr)

    def close(self) -> None:
        pass


def test_the_managers_client_seals_pulls_and_types_a_stale_token(node: dict[str, Path]) -> None:
    nodes = StorageNodes({"storage-102-3": "127.0.0.2", "storage-101-1": "127.0.0.1"},
                         SshSettings("root", "/k", "/known"), CLI)
    nodes._remotes["storage-102-3"] = LocalRemote(node)  # type: ignore[assignment]
    (node["source"] / "f").write_text("x\n")
    got = nodes.pull("storage-102-3", CTID, "storage-101-1", str(node["source"]), 0, 60, 4)
    assert (got.files_transferred, got.total_bytes) == (1, 2)
    with pytest.raises(StaleToken) as stale:
        nodes.pull("storage-102-3", CTID, "storage-101-1", str(node["source"]), 0, 60, 3)
    assert stale.value.recorded == 4 and "storage-102-3: stale token 3" in str(stale.value)
    sealed = nodes.seal("storage-102-3", CTID, 4)
    assert (sealed.sealed, sealed.changed, sealed.token) == (True, True, 4)
    assert nodes.seal("storage-102-3", CTID, 4).changed is False
    with pytest.raises(StaleToken):
        nodes.unseal("storage-102-3", CTID, 2)
    assert nodes.unseal("storage-102-3", CTID, 4).changed is True
    with pytest.raises(StorageFailed) as failed:  # a failure that is not a stale token stays a plain one
        nodes.pull("storage-102-3", CTID, "storage-101-1", "/no/such/folder", 0, 60, 5)
    assert not isinstance(failed.value, StaleToken)
