"""Shared fixtures. CTMANAGER_REQUIRE_INTEGRATION=1 turns any skipped integration
test into a failed run, so CI can never pass by skipping the real components."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctmanager.lab.pgserver import Cluster, PgError
from ctmanager.operations import inventory
from ctmanager.store import open_store
from ctmanager.store.db import Locator, is_url

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


BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """The run's PostgreSQL: $CTMANAGER_TEST_PG (a cluster folder scripts/test.sh
    started), else a private cluster made here and stopped at the end."""
    import tempfile

    given = os.environ.get("CTMANAGER_TEST_PG")
    # not under pytest's 0700 tree: the cluster runs as the postgres user
    cluster = Cluster(Path(given) if given else Path(tempfile.mkdtemp(prefix="ctm-pg-")))
    try:
        cluster.start()
    except PgError as exc:
        if os.environ.get("CTMANAGER_REQUIRE_INTEGRATION") == "1":
            pytest.fail(f"PostgreSQL is required here: {exc}")
        pytest.skip(f"PostgreSQL: {exc}")
    yield cluster
    if not given:
        cluster.stop()
        shutil.rmtree(cluster.folder, ignore_errors=True)


def fresh_pg_store(cluster: Cluster) -> str:
    """The URL of an empty database (one per test, reused: emptied here)."""
    return cluster.create_database("ctm_test")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_path(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Locator:
    """Where the test's store is: a file (SQLite) or a fresh database (PostgreSQL)."""
    path: Locator = tmp_path / "ctm.db"
    if backend == "postgresql":
        path = fresh_pg_store(request.getfixturevalue("pg_cluster"))
    monkeypatch.setenv("CTMANAGER_STORE", str(path))
    return path


@pytest.fixture
def sqlite_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """For the tests of SQLite's own behaviour (a file, WAL, raw sqlite3 access)."""
    path = tmp_path / "ctm.db"
    monkeypatch.setenv("CTMANAGER_STORE", str(path))
    return path


class Cli:
    """Runs the real `ctmanager` entry point in a subprocess."""

    def __init__(self, store: Locator, cwd: Path) -> None:
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
def cli(store_path: Locator) -> Cli:
    return Cli(store_path, ROOT)


@pytest.fixture
def example_store(cli: Cli) -> Cli:
    cli("init", str(EXAMPLE))
    return cli


def dump(path: Locator) -> str:
    """Logical content of a store (WAL-safe), for "nothing changed" checks."""
    import sqlite3

    if is_url(path):
        return _pg_dump(str(path))
    path = Path(path)
    if not path.exists():
        return "<no store>"
    con = sqlite3.connect(str(path))
    try:
        return "\n".join(con.iterdump())
    finally:
        con.close()


def raw_sql(path: Locator, sql: str, params: tuple[object, ...] = ()) -> None:
    """A write straight into the store's database, past ctmanager (a script, a
    restored backup, a bug): `?` placeholders, either backend."""
    import sqlite3

    if is_url(path):
        import psycopg

        from ctmanager.store.pg import pg_sql
        with psycopg.connect(str(path), autocommit=True) as con:
            con.execute(pg_sql(sql), params)  # type: ignore[arg-type]
        return
    with sqlite3.connect(str(path)) as db:
        db.execute(sql, params)


def no_store(path: Locator) -> bool:
    """Nothing of a store is there: no file (nor its WAL), or no table in the database."""
    if is_url(path):
        return _pg_dump(str(path)) == ""
    return not Path(path).exists() and not Path(f"{path}-wal").exists()


def _pg_dump(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables WHERE "
                                            "table_schema = 'public' ORDER BY table_name")]
        out = []
        for t in tables:
            cols = [r[0] for r in con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE "
                                              "table_name = %s ORDER BY ordinal_position", (t,))]
            out.append(f"TABLE {t} ({', '.join(cols)})")
            order = ", ".join(str(i + 1) for i in range(len(cols)))
            out += [repr(r) for r in con.execute(f'SELECT * FROM "{t}" ORDER BY {order}')]  # noqa: S608 - test
        return "\n".join(out)


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
def inv(store_path: Locator) -> inventory.Inventory:
    """The example DC's inventory on a fresh store (each backend)."""
    store = open_store(store_path, create=True)
    with store.transaction():
        dc = inventory.init(store, EXAMPLE)
    return inventory.Inventory(store, dc)
