"""Issue 35, hardening round 3 (classes 3, 10, 11) against the real components: BIND
with a key `dns bind-config` wrote past a planted link, a TSIG algorithm dnspython
cannot sign with, borg's passphrase, ctmailmap's 400 answer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bindserver import Bind, free_port

from tests.conftest import Cli, dump

ROOT = Path(__file__).resolve().parents[2]


def _one_line(p: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert p.returncode == code and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    return p.stderr


def test_bind_config_past_a_planted_key_link_then_a_real_named_publishes(example_store: Cli, tmp_path: Path) -> None:
    if not all(shutil.which(t) or Path("/usr/sbin", t).exists() for t in ("named", "tsig-keygen")):
        pytest.skip("needs BIND 9 (bash scripts/setup.sh)")
    victim = tmp_path / "victim"
    victim.write_text("another user's file\n")
    out = tmp_path / "bind"
    out.mkdir()
    (out / ".tsig.key.tmp").symlink_to(victim)
    port = free_port()
    assert "symbolic link" in _one_line(example_store("dns", "bind-config", str(out), "--port", str(port), check=False))
    assert victim.read_text() == "another user's file\n" and sorted(os.listdir(out)) == [".tsig.key.tmp"]
    (out / ".tsig.key.tmp").unlink()
    example_store("dns", "bind-config", str(out), "--port", str(port))
    assert (out / "tsig.key").stat().st_mode & 0o777 == 0o600
    server = Bind(out, port)
    server.start()
    try:
        example_store("dns", "configure", "--server", f"127.0.0.1:{port}", "--key-file", str(out / "tsig.key"))
        assert json.loads(example_store("dns", "sync", "--json").stdout)["error"] == ""
    finally:
        server.stop()


def test_a_tsig_algorithm_dnspython_cannot_use_is_refused_at_configure(example_store: Cli, tmp_path: Path) -> None:
    before = dump(example_store.store)
    key = tmp_path / "k.key"
    for algorithm in ("hmac-foo", "gss-tsig"):
        key.write_text(f'key "ctmanager" {{ algorithm {algorithm}; secret "c2VjcmV0c2VjcmV0"; }};\n')
        key.chmod(0o600)
        err = _one_line(example_store("dns", "configure", "--server", "127.0.0.1:53", "--key-file", str(key),
                                      check=False))
        assert algorithm in err and "hmac-sha256" in err
    assert dump(example_store.store) == before
    # every later edit still works: nothing was accepted that fails later
    example_store("route", "set", "myhost", "smtp", "relay-101-2")


def test_ctbackup_run_refuses_a_passphrase_others_may_read(tmp_path: Path) -> None:
    if not shutil.which("borg"):
        pytest.skip("needs borg (bash scripts/setup.sh)")
    (tmp_path / "data").mkdir()
    passphrase = tmp_path / "pass"
    passphrase.write_text("pw\n")
    passphrase.chmod(0o644)
    conf = tmp_path / "ctbackup.toml"
    conf.write_text(f'data = "{tmp_path / "data"}"\nnode = "storage-101-4"\nstate_dir = "{tmp_path / "state"}"\n'
                    f'[repository]\nlocation = "{tmp_path / "repo"}"\npassphrase_file = "{passphrase}"\n')
    p = subprocess.run([sys.executable, "-m", "ctmanager.backupnode.cli", "--config", str(conf), "run"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "chmod 600" in json.loads(p.stdout)["error"], (p.stdout, p.stderr)
    assert not (tmp_path / "repo").exists() and not (tmp_path / "state").exists()


def test_ctmailmap_does_not_tell_clients_where_the_store_is(tmp_path: Path) -> None:
    """The reply a mail router's client gets says the store is away, not where it is (its log says that)."""
    from ctmanager.proxies.mailmap import MailMap

    secret = tmp_path / "private-folder" / "ctmanager.db"
    m = MailMap(secret)
    m.refresh()
    answer = m.answer(b"get jira@myhost.example.net\n")
    assert answer.startswith(b"400 store unavailable") and b"private-folder" not in answer, answer

