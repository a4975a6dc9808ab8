"""Shared fixtures. CTMANAGER_REQUIRE_INTEGRATION=1 turns any skipped integration
test into a failed run, so CI can never pass by skipping the real components."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ctmanager.store import inventory, open_store

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "templates" / "dc" / "example.toml"
_skipped_integration: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "/integration/" in f"/{report.nodeid}":
        _skipped_integration.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CTMANAGER_REQUIRE_INTEGRATION") == "1" and _skipped_integration:
        sys.stderr.write("\nCTMANAGER_REQUIRE_INTEGRATION=1 but integration tests were skipped:\n")
        for nodeid in _skipped_integration:
            sys.stderr.write(f"  {nodeid}\n")
        session.exitstatus = 1


@pytest.fixture
def store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ctm.db"
    monkeypatch.setenv("CTMANAGER_STORE", str(path))
    return path


class Cli:
    """Runs the real `ctmanager` entry point in a subprocess."""

    def __init__(self, store: Path, cwd: Path) -> None:
        self.store = store
        self.cwd = cwd

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CTMANAGER_STORE": str(self.store)}
        proc = subprocess.run([sys.executable, "-m", "ctmanager", *args], cwd=self.cwd, env=env,
                              capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"ctmanager {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc


@pytest.fixture
def cli(store_path: Path) -> Cli:
    return Cli(store_path, ROOT)


@pytest.fixture
def example_store(cli: Cli) -> Cli:
    cli("init", str(EXAMPLE))
    return cli


def dump(path: Path) -> str:
    """Logical content of a store (WAL-safe), for "nothing changed" checks."""
    import sqlite3

    if not path.exists():
        return "<no store>"
    con = sqlite3.connect(str(path))
    try:
        return "\n".join(con.iterdump())
    finally:
        con.close()


def tree(path: Path) -> dict[str, bytes]:
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def rack_key(folder: Path) -> Path:
    """A rack HMAC key file as ctmanager accepts it (mode 0600)."""
    key = folder / "rack.key"
    key.write_text("00" * 32)
    key.chmod(0o600)
    return key


def manager_toml(folder: Path, extra: str = "") -> Path:
    """A minimal manager config (rack-101) with `extra` appended."""
    conf = folder / "manager.toml"
    conf.write_text(f'rack = "rack-101"\nlisten = "10.0.0.1:7070"\nkey_file = "{rack_key(folder)}"\n[ssh]\n'
                    f'key_file = "/k"\nknown_hosts = "/kh"\n{extra}')
    return conf


def agent_toml(folder: Path, extra: str = "") -> Path:
    """A minimal agent config (hn-101-1 of rack 101) with `extra` appended."""
    conf = folder / "agent.toml"
    conf.write_text(f'rack = 101\nhn = "hn-101-1"\nkey_file = "{rack_key(folder)}"\n'
                    f'report_to = ["10.101.0.1:7070"]\n{extra}')
    return conf


def require(binary: str) -> str:
    """A real component's binary, or skip (which fails the run in CI)."""
    found = shutil.which(binary)
    if not found:
        pytest.skip(f"{binary} is not installed")
    return found


@pytest.fixture
def inv(tmp_path: Path) -> inventory.Inventory:
    """The example DC's inventory on a fresh store."""
    store = open_store(tmp_path / "s.db", create=True)
    with store.transaction():
        dc = inventory.init(store, EXAMPLE)
    return inventory.Inventory(store, dc)
