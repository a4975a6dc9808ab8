"""`ctbackup` as a process, with the real borg and inotify on a local repository:
the daemon makes a restore point of a CT written to, and again after a change;
status, list and a restore --at the earlier time; bad input in one JSON line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT


def ctbackup(config: Path, *args: str) -> tuple[int, dict]:
    p = subprocess.run([sys.executable, "-m", "ctmanager.backupnode.cli", "--config", str(config), *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.stdout.count("\n") == 1 and "Traceback" not in p.stderr, p.stdout + p.stderr
    return p.returncode, json.loads(p.stdout)


def wait(what: str, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_daemon_backs_up_what_changes_and_a_restore_gives_the_earlier_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "1005").mkdir(parents=True)
    (data / "1005" / "log").write_text("one\n")
    (tmp_path / "pass").write_text("pw\n")
    (tmp_path / "pass").chmod(0o600)  # a passphrase others may read is refused
    config = tmp_path / "ctbackup.toml"
    config.write_text(f'data = "{data}"\nnode = "storage-101-4"\nstate_dir = "{tmp_path / "state"}"\nrpo = 60\n'
                      f'[repository]\nlocation = "{tmp_path / "repo"}"\npassphrase_file = "{tmp_path / "pass"}"\n'
                      '[limits]\nio_pressure = 100\nload_per_cpu = 1000\n')
    daemon = subprocess.Popen([sys.executable, "-m", "ctmanager.backupnode.cli", "--config", str(config), "run"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def newest() -> str | None:
            code, out = ctbackup(config, "status")
            return out["cts"][0]["newest"] if code == 0 and out["cts"] and out["cts"][0]["state"] == "OK" else None

        first = wait("the first restore point (the start's scan)", newest)
        (data / "1005" / "log").write_text("two\n")
        second = wait("a restore point after the change", lambda: (n := newest()) != first and n)
        code, out = ctbackup(config, "status")
        assert out["daemon"] is True and out["error"] == "" and out["repository_bytes"] > 0
        code, listed = ctbackup(config, "list", "1005")
        assert code == 0 and [p["archive"] for p in listed["points"]] == [first, second]
        code, out = ctbackup(config, "restore", "1005", "--archive", first, "--to", str(tmp_path / "back"))
        assert code == 0 and (tmp_path / "back" / "1005" / "log").read_text() == "one\n"
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0 and "restore point of CT 1005" in err and "pw" not in err
    assert ctbackup(config, "status")[1]["daemon"] is False
    code, out = ctbackup(config, "restore", "1005", "--to", str(tmp_path / "back"))
    assert code == 2 and "exists" in out["error"]
    code, out = ctbackup(config, "restore", "1005", "--at", "2001-01-01T00:00:00Z", "--to", str(tmp_path / "x"))
    assert code == 2 and "no restore point at or before 2001-01-01T00:00:00Z" in out["error"]
    assert os.stat(tmp_path / "state" / "points.jsonl").st_size > 0
