"""The deploy files ops drop onto the machines: units pass systemd's own check, the run
scripts parse, the annotated agent config loads with the real loader, and the manager's
authorized_keys line forces ctgate."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ctmanager.agent import config as agentconfig

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted([*ROOT.glob("agents/*.service"), *ROOT.glob("manager/*.service"), *ROOT.glob("proxies/*.service"), *ROOT.glob("templates/storage/*.service")])
RUNS = sorted([*ROOT.glob("agents/*.run"), *ROOT.glob("manager/*.run"), *ROOT.glob("templates/storage/*.run")])
BIN = Path(sys.executable).parent


def test_there_are_units_and_run_scripts() -> None:
    assert {u.name for u in UNITS} >= {"ctagent.service", "ctbackup.service", "ctmailmap.service"}
    assert {r.name for r in RUNS} >= {"ctagent.run", "ctbackup.run"}


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_accepts_the_unit(unit: Path, tmp_path: Path) -> None:
    # the unit names /usr/bin/<tool>, where the Debian package links it; here that is the venv
    p = verify(unit, tmp_path, f"{BIN}/")
    mine = [line for line in p.stderr.splitlines() if unit.name in line]
    assert p.returncode == 0 and not mine, p.stderr


def verify(unit: Path, tmp_path: Path, bin_dir: str) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` of a copy of `unit` whose ExecStart= tool is in `bin_dir`."""
    text = re.sub(r"^ExecStart=/usr/bin/", f"ExecStart={bin_dir}", unit.read_text(), flags=re.MULTILINE)
    (tmp_path / unit.name).write_text(text)
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (Debian's systemd) is installed here: the units are checked, never skipped"
    return subprocess.run([analyze, "verify", str(tmp_path / unit.name)], capture_output=True, text=True, timeout=120)


def test_systemd_verify_refuses_a_unit_whose_program_is_missing(tmp_path: Path) -> None:
    """The check above is not vacuous: a unit naming no program there fails it."""
    p = verify(ROOT / "proxies" / "ctmailmap.service", tmp_path, f"{tmp_path}/nowhere/")
    assert p.returncode != 0 and "ctmailmap" in p.stderr


@pytest.mark.parametrize("run", RUNS, ids=[r.name for r in RUNS])
def test_run_scripts_are_executable_and_parse(run: Path) -> None:
    assert run.stat().st_mode & 0o111
    assert subprocess.run(["sh", "-n", str(run)], capture_output=True).returncode == 0


def test_the_annotated_agent_config_loads(tmp_path: Path) -> None:
    key = tmp_path / "rack.key"
    key.write_text("ab" * 32 + "\n")
    key.chmod(0o600)
    conf = tmp_path / "ctagent.toml"
    conf.write_text((ROOT / "agents" / "ctagent.toml").read_text().replace("/etc/ctagent/rack.key", str(key)))
    c = agentconfig.load(conf)
    assert (c.hn, c.rack) == ("hn-101-1", 101)


def test_the_managers_key_is_forced_through_ctgate() -> None:
    lines = [x for x in (ROOT / "agents" / "authorized_keys").read_text().splitlines() if x and x[0] != "#"]
    assert lines and all(x.startswith('restrict,command="/usr/bin/ctgate ') for x in lines)
    command = shlex.split(lines[0].split('command="', 1)[1].split('"', 1)[0])
    assert command[1:] == ["--agent", "/usr/bin/ctagent", "--config", "/etc/ctagent/ctagent.toml"]
