"""Continuous backups in the lab, with the real borg behind a real sshd (the
backup node's forced commands), ctbackup on the storage node watching the CTs'
/data with inotify, and the manager's `backup` commands over SSH:

- a write in a CT is in a restore point within the RPO; overwritten, it comes
  back with `restore --at` the earlier time (into a folder, and in place: the CT
  stopped through the manager and started again, nothing else touched);
- the daemon killed mid-backup resumes from borg's checkpoint (no full re-upload);
- the backup node down: an alarm, the application unaffected, caught up after;
- a tree of 100,000 files under a steady trickle of changes keeps its RPO;
- the storage node's key cannot remove a restore point (the data stays, and
  verify finds the "deleted" one); the prune key can.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

from ctmanager.backupnode import borg
from ctmanager.backupnode.config import load
from tests.conftest import ROOT
from tests.integration.labrack import Rack, wait_for

RPO = 60.0  # the lab's (lab/backupnodes.py)
CT = "acme"


def status(rack: Rack) -> dict[str, Any]:
    """The rack's one storage node's `backup status --json`."""
    return json.loads(rack.cli("backup", "status", "--json").stdout)["nodes"][0]


def ct_state(rack: Rack, name: str) -> dict[str, Any]:
    return next(c for c in status(rack)["cts"] if c["hostname"] == name)


def points(rack: Rack, name: str) -> list[dict[str, Any]]:
    return json.loads(rack.cli("backup", "list", name, "--json").stdout)["points"]


def point_after(rack: Rack, name: str, t: float) -> dict[str, Any] | None:
    """The CT's first restore point whose cycle started after `t` (its data is as of then)."""
    later = [p for p in points(rack, name) if p["epoch"] > t]
    return later[0] if later else None


def in_ct(rack: Rack, name: str, script: str) -> str:
    return rack.cli("ct", "exec", name, "--", "sh", "-c", script, timeout=120).stdout


def lab_dir(rack: Rack) -> Path:
    return Path(rack.inv["lab_dir"])


def storage_node(rack: Rack) -> str:
    return next(iter(rack.storage))


def ctid(rack: Rack, name: str) -> int:
    return int(rack.status()[name]["ctid"])


def data_of(rack: Rack, name: str) -> Path:
    return lab_dir(rack) / "data" / storage_node(rack) / str(ctid(rack, name))


def test_a_write_is_backed_up_within_the_rpo_and_restored_as_of_the_earlier_time(rack: Rack, tmp_path: Path) -> None:
    wait_for("a first restore point of every CT", lambda: all(c["state"] == "OK" for c in status(rack)["cts"]),
             timeout=RPO)
    node = status(rack)
    assert node["daemon"] is True and node["error"] == "" and node["repository_bytes"] > 0
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    in_ct(rack, CT, f"echo {first} > /data/probe")
    wrote = time.time()
    one = wait_for("a restore point holding the write", lambda: point_after(rack, CT, wrote), timeout=RPO)
    assert one["epoch"] - wrote < RPO
    in_ct(rack, CT, f"echo {second} > /data/probe")
    overwrote = time.time()
    wait_for("a restore point holding the overwrite", lambda: point_after(rack, CT, overwrote), timeout=RPO)

    # into a folder on the storage node: the CT runs on, untouched
    out = json.loads(rack.cli("backup", "restore", CT, "--at", str(one["epoch"]), "--to", str(tmp_path),
                              "--json").stdout)
    assert out["archive"] == one["archive"] and not out["restarted"]
    assert (tmp_path / str(ctid(rack, CT)) / "probe").read_text().strip() == first
    assert in_ct(rack, CT, "cat /data/probe").strip() == second

    # in place: the CT is stopped through the manager, restored, started; the others are not touched
    before = rack.status()
    p = rack.cli("backup", "restore", CT, "--at", str(one["epoch"]), "--in-place")
    assert "stopping it through" in p.stdout and "started again" in p.stdout
    assert in_ct(rack, CT, "cat /data/probe").strip() == first
    after = rack.status()
    assert after[CT]["opst"] == "UP"
    assert {h: (r["opst"], r["since"]) for h, r in after.items() if h != CT} == \
        {h: (r["opst"], r["since"]) for h, r in before.items() if h != CT}
    # the restored folder was swapped in: its changes are still seen
    in_ct(rack, CT, f"echo {second} > /data/probe")
    restored = time.time()
    wait_for("a restore point of a write after the in-place restore", lambda: point_after(rack, CT, restored),
             timeout=RPO)
    # the manager's leader reads the points too: status shows each CT's against the RPO
    wait_for("status showing the CT's backup OK", lambda: (rack.status()[CT].get("backup") or {}).get("state") == "OK",
             timeout=30)


def digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def test_a_daemon_killed_mid_backup_resumes_from_its_checkpoint(rack: Rack, tmp_path: Path) -> None:
    size = 1024  # MiB of incompressible data: at the lab's 20 MiB/s upload limit, about 50 s of backup
    in_ct(rack, CT, f"dd if=/dev/urandom of=/data/big bs=1M count={size} 2>/dev/null && sync")
    wrote = time.time()
    want = digest(data_of(rack, CT) / "big")
    node = storage_node(rack)

    def creating_for() -> float:
        """How long the node's borg create has run (0: none runs)."""
        p = subprocess.run(["pgrep", "-f", f"borg create.*{node}"], capture_output=True, text=True)
        pids = [int(x) for x in p.stdout.split()]
        if not pids:
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        up = float(Path("/proc/uptime").read_text().split()[0])
        try:
            start = int(Path(f"/proc/{min(pids)}/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
        except (OSError, IndexError, ValueError):
            return 0.0
        return up - start

    # past borg's first checkpoint (10 s): what was sent by then is kept
    wait_for("a backup of the big file running for 12 s", lambda: creating_for() > 12, timeout=90, every=0.2)
    killed = time.time()  # before the fault: with --restart it returns once the new daemon runs, which may
    rack.fault("kill-backup", node, "--restart")  # have begun its (resumed) backup by then
    resumed = wait_for("a restore point with the big file after the restart", lambda: point_after(rack, CT, killed),
                       timeout=300, every=1)
    before = [p for p in points(rack, CT) if wrote < p["epoch"] < killed]
    assert not before, f"the backup finished before it was killed (make the file bigger): {before}"
    # what borg's checkpoint kept (10 s at 10 MiB/s at least) is not sent again
    assert resumed["new_bytes"] is not None and resumed["new_bytes"] < (size - 100) << 20, resumed
    rack.cli("backup", "restore", CT, "--archive", resumed["archive"], "--to", str(tmp_path))
    assert digest(tmp_path / str(ctid(rack, CT)) / "big") == want
    in_ct(rack, CT, "rm /data/big")


def test_the_backup_node_down_is_an_alarm_the_ct_runs_on_and_backups_catch_up_after(rack: Rack) -> None:
    rack.fault("backup-node-down")
    try:
        token = uuid.uuid4().hex
        started = time.monotonic()
        in_ct(rack, CT, f"echo {token} > /data/while-down && sync")
        assert time.monotonic() - started < 10  # the application does not wait for the backups
        wrote = time.time()
        failing = wait_for("the daemon saying the repository fails", lambda: status(rack)["error"], timeout=60)
        assert "10.0.4.10" in failing or "onnection" in failing, failing
        wait_for("the manager's ALARM line", lambda: "ALARM backups on" in rack.manager_log(), timeout=30)
        assert rack.status()[CT]["opst"] == "UP"
    finally:
        rack.fault("heal")
    wait_for("a restore point with the write made while the node was down", lambda: point_after(rack, CT, wrote),
             timeout=120, every=1)
    wait_for("the manager saying it is fine again", lambda: "fine again" in rack.manager_log(), timeout=30)
    assert status(rack)["error"] == ""


HOOK = """mkdir -p /data/.ctbackup && echo $$ > /data/.ctbackup/hook
while [ -e /data/.ctbackup/hook ]; do
  r=$(cat /data/.ctbackup/request 2>/dev/null)
  if [ -n "$r" ] && [ "$r" != "$(cut -d' ' -f1 /data/.ctbackup/ready 2>/dev/null)" ]; then
    date +%s > /data/dump.txt && echo "$r 0" > /data/.ctbackup/ready
  fi
  sleep 0.2
done
"""


def test_a_cts_pre_backup_hook_runs_before_its_backup_and_its_output_is_in_the_point(rack: Rack,
                                                                                     tmp_path: Path) -> None:
    """The handshake in the CT's /data (backupnode/hook.py), here answered by a shell loop in the CT."""
    name = "myhost"
    (data_of(rack, name) / "hook.sh").write_text(HOOK)
    in_ct(rack, name, "nohup sh /data/hook.sh >/dev/null 2>&1 &")
    try:
        wait_for("the hook's marker", lambda: (data_of(rack, name) / ".ctbackup" / "hook").exists(), timeout=20)
        in_ct(rack, name, "echo change > /data/change")
        wrote = time.time()
        got = wait_for("a restore point after the change", lambda: point_after(rack, name, wrote), timeout=RPO)
        rack.cli("backup", "restore", name, "--archive", got["archive"], "--to", str(tmp_path))
        dumped = float((tmp_path / str(ctid(rack, name)) / "dump.txt").read_text())
        assert dumped >= int(wrote)  # the hook ran for this backup, and its dump is in it
    finally:
        (data_of(rack, name) / ".ctbackup" / "hook").unlink(missing_ok=True)  # the loop ends


def test_a_tree_of_100000_files_under_a_trickle_of_changes_keeps_its_rpo(rack: Rack) -> None:
    tree = data_of(rack, "initech") / "tree"
    script = ("import os,sys; r=sys.argv[1]\n"
              "for d in range(100):\n os.makedirs(f'{r}/{d}', exist_ok=True)\n"
              " for f in range(1000):\n  open(f'{r}/{d}/{f}', 'w').write(str(f))\n")
    subprocess.run([sys.executable, "-c", script, str(tree)], check=True, timeout=300)
    made = time.time()
    wait_for("a restore point of the whole tree", lambda: point_after(rack, "initech", made), timeout=4 * RPO,
             every=1)
    stop = threading.Event()

    def trickle() -> None:  # a few files rewritten every second, as an application would
        while not stop.wait(0.5):
            d, f = random.randrange(100), random.randrange(1000)
            (tree / str(d) / str(f)).write_text(f"{time.time()}\n")

    writer = threading.Thread(target=trickle, daemon=True)
    writer.start()
    ages, seen = [], set()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            c = ct_state(rack, "initech")
            ages.append(c["age"])
            seen.add(c["newest"])
            time.sleep(2)
    finally:
        stop.set()
        writer.join()
    assert max(ages) <= RPO, ages
    assert len(seen) >= 3, seen  # it kept making points while the tree changed


def _repo_files(repo: Path) -> dict[str, bytes]:
    return {str(p.relative_to(repo)): p.read_bytes() for p in sorted((repo / "data").rglob("*")) if p.is_file()}


def _kept(before: dict[str, bytes], now: dict[str, bytes]) -> bool:
    """Every segment there before is still there, its bytes as they were: append-only (the
    daemon's backup running meanwhile may have gone on writing its newest segment)."""
    return all(name in now and now[name][:len(old)] == old for name, old in before.items())


def test_the_storage_nodes_key_cannot_remove_a_restore_point_and_the_prune_key_can(rack: Rack,
                                                                                   tmp_path: Path) -> None:
    node = storage_node(rack)
    config = load(lab_dir(rack) / "storage" / node / "ctbackup.toml")
    repo_dir = Path(config.repo.location.split("10.0.4.10", 1)[1])
    # the storage node's key and passphrase, with a cache of its own (the daemon holds its own)
    env = {**os.environ, **borg.env(config.repo), "BORG_BASE_DIR": str(tmp_path)}

    def listed() -> list[str]:
        p = subprocess.run(borg.list_argv(config.repo, bypass_lock=True), env=env, capture_output=True, text=True,
                           timeout=300)
        assert p.returncode == 0, p.stderr
        return [a.name for a in borg.parse_list(p.stdout)]

    for i in range(3):  # three restore points at least
        in_ct(rack, CT, f"echo {i} > /data/more")
        wrote = time.time()
        wait_for("a restore point", lambda: point_after(rack, CT, wrote), timeout=RPO)
    archives = listed()
    assert len(archives) >= 3
    kept = _repo_files(repo_dir)
    # with the storage node's own key, as a compromised storage node would
    for argv in (["borg", "delete", "--lock-wait", "60", f"{config.repo.location}::{archives[0]}"],
                 ["borg", "prune", "--lock-wait", "60", "--keep-last", "1", config.repo.location],
                 ["borg", "compact", "--lock-wait", "60", config.repo.location]):
        subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    now = _repo_files(repo_dir)
    assert _kept(kept, now), "a segment the storage node's key wrote was removed or rewritten"
    verify = rack.cli("backup", "verify", check=False, timeout=600)
    assert verify.returncode == 1 and "deleted behind its back" in verify.stdout, verify.stdout + verify.stderr
    # the prune side (its own key, its own config, never on the storage node) really removes and frees
    prune_cfg = lab_dir(rack) / "backup" / "10.0.4.10" / "prune" / f"{node}.toml"
    assert tomllib.loads(prune_cfg.read_text())["repository"]["key_file"] != str(config.repo.key_file)
    p = subprocess.run([sys.executable, "-m", "ctmanager.backupnode.cli", "--config", str(prune_cfg), "prune",
                        "--keep-within", "1H"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and json.loads(p.stdout)["ok"], p.stdout + p.stderr
    after = _repo_files(repo_dir)
    assert not _kept(kept, after), "the prune key's compact freed nothing"
