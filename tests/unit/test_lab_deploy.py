"""How `lab machine` installs the deploy folders: the managers' keys take the options of
agents/authorized_keys, the store's password leaves the URL for a pgpass file, and a
manager machine's config names its own copies of the keys."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path

import pytest

from ctmanager.errors import InputError, StoreError
from ctmanager.lab import deploy, layout
from ctmanager.store import pg

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx5Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dQ ctmanager-manager"


def test_the_managers_keys_are_forced_through_the_shipped_gate() -> None:
    text = deploy.managers_authorized_keys([KEY, KEY.replace("manager", "other")])
    lines = text.splitlines()
    assert len(lines) == 2 and lines[0].endswith(KEY)
    options = deploy.key_options(lines[0])
    assert options.startswith("restrict,command=")
    command = shlex.split(options.split('command="', 1)[1].rsplit('"', 1)[0])
    assert command[0] == "/usr/bin/ctgate" and "--config" in command


def test_options_end_at_the_first_blank_outside_quotes() -> None:
    line = 'restrict,command="/x --a b" ssh-ed25519 AAAA c'
    assert deploy.key_options(line) == 'restrict,command="/x --a b"'
    with pytest.raises(InputError, match="options and a key"):
        deploy.key_options('restrict,command="never closed')


@pytest.mark.parametrize("template, why", [
    ("# only comments\n\n", "no key line"),
    ("ssh-ed25519 AAAA plain\n", "restrict,command"),
    ('command="/x" ssh-ed25519 AAAA no-restrict\n', "restrict,command"),
])
def test_a_template_that_would_not_gate_the_key_is_refused(template: str, why: str) -> None:
    with pytest.raises(InputError, match=why):
        deploy.gated_keys(template, [KEY])


def test_the_stores_password_goes_to_pgpass_not_the_url() -> None:
    bare, line = pg.split_password("postgresql://ctmanager:s3:cr\\et@10.101.1.4:5432/ctmanager")
    assert bare == "postgresql://ctmanager@10.101.1.4:5432/ctmanager" and "s3" not in bare
    assert line == "10.101.1.4:5432:ctmanager:ctmanager:s3\\:cr\\\\et\n"
    assert pg.split_password("postgresql://u:p@db/ct")[0] == "postgresql://u@db:5432/ct"


@pytest.mark.parametrize("url", ["postgresql://u@db/ct", "postgresql://db/ct", "postgresql://u:p@db"])
def test_a_store_url_without_user_password_or_database_is_refused(url: str) -> None:
    with pytest.raises(StoreError, match="must name its user, password and database"):
        pg.split_password(url)


def test_a_bad_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(StoreError, match="not a usable PostgreSQL URL") as err:
        pg.split_password("postgresql://u:hunter2@[db/ct")
    assert "hunter2" not in str(err.value)


def test_a_manager_machines_config_names_its_own_copies(tmp_path: Path) -> None:
    lab = layout.Lab(str(tmp_path / "root"))
    etc = Path("/etc/ctmanager")
    cfg = tomllib.loads(layout.manager_toml(lab, 101, "10.101.0.2", 7070, name="manager-101", secrets=etc))
    assert cfg["key_file"] == str(etc / "rack.key")
    assert (cfg["ssh"]["key_file"], cfg["ssh"]["known_hosts"]) == (str(etc / "id_ed25519"), str(etc / "known_hosts"))
    assert cfg["moves"]["known_hosts"] == str(etc / "storage_known_hosts")
    lab_cfg = tomllib.loads(layout.manager_toml(lab, 101, "10.101.0.2", 7070))
    assert lab_cfg["ssh"]["key_file"] == str(lab.ssh_key) and lab_cfg["key_file"] == str(lab.rack_key)


def test_a_value_in_a_drop_in_keeps_its_percent_signs_and_quotes() -> None:
    # quote() makes %XX of an @ in a user name; systemd would read %4 as a specifier
    assert deploy.unit_escape("postgresql://u%40x@h:5432/d") == "postgresql://u%%40x@h:5432/d"
    assert deploy.unit_escape('a"b\\c') == 'a\\"b\\\\c'
