"""ctmailmap answered through Postfix's own client (`postmap -q KEY tcp:…`), the
way the mail routers query it; and its behaviour with bad clients."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from bindserver import free_port
from labrack import ROOT, wait_for

from tests.conftest import Cli


@pytest.fixture
def mailmap(example_store: Cli, tmp_path: Path) -> Iterator[tuple[Cli, Postmap]]:
    if not shutil.which("postmap") and not Path("/usr/sbin/postmap").exists():
        pytest.skip("needs Postfix's postmap (bash scripts/setup.sh)")
    port = free_port()
    # postmap reads a main.cf: the one ctmanager renders for the mail routers
    (tmp_path / "postfix").mkdir()
    (tmp_path / "postfix" / "main.cf").write_text(
        example_store("mail", "postfix-config", "--mailmap", f"127.0.0.1:{port}").stdout)
    proc = subprocess.Popen([sys.executable, "-m", "ctmanager.proxies.mailmap", "--store", str(example_store.store),
                             "--listen", f"127.0.0.1:{port}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for("ctmailmap listening", lambda: _connect(port), timeout=20)
        yield example_store, Postmap(tmp_path / "postfix", port)
    finally:
        proc.terminate()
        proc.wait(10)


def _connect(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        return None


class Postmap:
    """Postfix's own table client, with the rendered main.cf."""

    def __init__(self, config_dir: Path, port: int) -> None:
        self.config_dir, self.port = config_dir, port

    def __call__(self, key: str) -> tuple[int, str]:
        p = subprocess.run(["postmap", "-c", str(self.config_dir), "-q", key, f"tcp:127.0.0.1:{self.port}"],
                           capture_output=True, text=True, timeout=30)
        return p.returncode, p.stdout.strip()


def test_postfix_gets_a_transport_for_mailboxes_discards_the_rest_and_knows_its_domains(
        mailmap: tuple[Cli, Postmap]) -> None:
    cli, postmap = mailmap
    lmtp = "lmtp:inet:mailstore.myhost.example.net.internal:24"
    assert postmap("jira@myhost.example.net") == (0, lmtp)
    assert postmap("JIRA@MyHost.Example.Net") == (0, lmtp)
    assert postmap("bob@myhost.example.net") == (0, "discard:")
    assert postmap("myhost.example.net") == (0, lmtp)  # relay_domains, and transport's domain step
    assert postmap("jira@elsewhere.example.org")[0] == 1  # not found
    assert postmap("example.net")[0] == 1
    assert postmap("with space@myhost.example.net")[0] == 1  # %XX-encoded by postmap; not a mailbox


def test_a_new_tenant_is_answered_without_a_restart(mailmap: tuple[Cli, Postmap]) -> None:
    cli, postmap = mailmap
    assert postmap("jira@globex.example.net")[0] == 1
    cli("tenant", "add", "globex", "--rack", "rack-101", "--apps", "jira")
    wait_for("the new tenant's mailbox", lambda: postmap("jira@globex.example.net")[1].startswith("lmtp:"),
             timeout=10)


def test_a_store_replaced_by_mv_is_read_anew(mailmap: tuple[Cli, Postmap], tmp_path: Path) -> None:
    """ctmailmap follows the store's path, not the file it opened first (issue 19, 6)."""
    cli, postmap = mailmap
    assert postmap("jira@acme.example.net")[0] == 0
    copy = tmp_path / "copy.db"
    with sqlite3.connect(cli.store) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
        src.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # nothing of the old store left in its WAL
    subprocess.run([sys.executable, "-m", "ctmanager", "--store", str(copy), "tenant", "rm", "acme"], cwd=ROOT,
                   check=True, capture_output=True)
    with sqlite3.connect(copy) as c:
        c.execute("PRAGMA journal_mode = DELETE")  # the copy in one file, as an operator's cp would leave it
    copy.replace(cli.store)
    wait_for("acme gone after the store was replaced", lambda: postmap("jira@acme.example.net")[0] == 1, timeout=10)


def test_garbage_long_lines_and_ten_thousand_idle_clients_do_not_hurt_it(mailmap: tuple[Cli, Postmap]) -> None:
    import resource

    cli, postmap = mailmap
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 10_200:
        pytest.skip(f"the system allows {hard} open files; 10,000 connections need more")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    idle = [socket.create_connection(("127.0.0.1", postmap.port)) for _ in range(10_000)]
    s = socket.create_connection(("127.0.0.1", postmap.port), timeout=5)
    f = s.makefile("rwb")
    for junk, want in ((b"\xff\xfe garbage\n", b"500 bad request"), (b"put x y\n", b"500 bad request"),
                       (b"get jira@myhost.example.net\n", b"200 lmtp:")):
        f.write(junk)
        f.flush()
        assert f.readline().startswith(want)
    f.write(b"get " + b"a" * 10_000 + b"\n")
    f.flush()
    assert f.readline().startswith(b"500 request too long")
    for c in idle:
        c.close()
    assert postmap("jira@myhost.example.net")[0] == 0  # still serving


def test_an_unreadable_store_is_a_temporary_failure(tmp_path: Path) -> None:
    from ctmanager.proxies.mailmap import MailMap

    m = MailMap(tmp_path / "missing.db")
    m.refresh()
    assert m.answer(b"get jira@myhost.example.net\n").startswith(b"400 store unavailable")
