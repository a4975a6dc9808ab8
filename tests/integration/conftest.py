"""The rack fixture: each test module gets its own lab, up for the module; or,
with CTMANAGER_INVENTORY=FILE, the rack that inventory describes (the Vagrant
rack, real hardware), which the suite only uses and never takes down."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from labrack import ROOT, Rack, all_up, wait_for

NEEDED = ("lxc-start", "sshd", "svscan", "ip")


@pytest.fixture(scope="module")
def rack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rack]:
    given = os.environ.get("CTMANAGER_INVENTORY")
    if given:
        given_rack = Rack(Path(given))
        wait_for("every CT of the rack UP", all_up(given_rack), timeout=300, every=1)
        yield given_rack
        return
    missing = [t for t in NEEDED if not shutil.which(t) and not Path("/usr/sbin", t).exists()]
    if os.geteuid() != 0 or missing:
        pytest.skip(f"the lab needs root and {', '.join(missing) or 'root'} (bash scripts/setup.sh)")
    base = tmp_path_factory.mktemp("lab")
    env = {**os.environ, "CTMANAGER_STORE": str(base / "ctm.db"), "CTMANAGER_LAB_DIR": str(base / "rack")}

    def ctm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ctmanager", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)

    assert ctm("init", "example").returncode == 0
    up = ctm("lab", "up", "--hns", "3", "--timeout", "90")
    try:
        assert up.returncode == 0, up.stderr
        yield Rack(base / "rack" / "inventory.toml")
    finally:
        down = ctm("lab", "down")
        assert down.returncode == 0, down.stderr
        assert ctm("lab", "down").returncode == 0  # twice is fine
        assert not (base / "rack").exists()
        assert "ctlab-" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
