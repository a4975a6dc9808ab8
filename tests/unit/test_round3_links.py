"""Issue 35, hardening round 3, classes 3, 10 and 11: nothing is written through a link
planted at a temp or final name (or a folder of a tree we own); accepted configuration
works later (a TSIG algorithm dnspython cannot use, control characters in OUT); secrets
at rest are private and ctmailmap's answers never name the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from ctmanager import files
from ctmanager.errors import InputError
from tests.conftest import Cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "templates" / "dc" / "example.toml"
SECRET = b"someone else's file\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside every output folder: it must stay as it is."""
    f = tmp_path / "elsewhere" / "victim"
    f.parent.mkdir()
    f.write_bytes(SECRET)
    return f


@pytest.fixture
def ctm(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path / "s.db", ROOT)
    cli("init", str(EXAMPLE))
    return cli


def refused(p: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    return p.stderr


def untouched(victim: Path) -> None:
    assert victim.read_bytes() == SECRET and not victim.is_symlink()


# ---- the primitive ------------------------------------------------------------
@pytest.mark.parametrize("where", ["temp", "final"])
def test_write_atomic_refuses_a_link_at_the_temp_or_final_name(tmp_path: Path, victim: Path, where: str) -> None:
    out = tmp_path / "out.conf"
    (Path(files.temp_name(out)) if where == "temp" else out).symlink_to(victim)
    with pytest.raises(files.LinkRefused, match="symbolic link"):
        files.write_atomic(out, b"new\n", 0o644)
    untouched(victim)
    assert isinstance(files.LinkRefused("x"), InputError)  # exit 2


def test_a_hard_link_at_the_temp_name_is_refused_and_a_leftover_of_ours_replaced(tmp_path: Path,
                                                                                   victim: Path) -> None:
    out = tmp_path / "out.conf"
    os.link(victim, files.temp_name(out))
    with pytest.raises(files.LinkRefused):
        files.write_atomic(out, b"new\n", 0o644)
    untouched(victim)
    os.unlink(files.temp_name(out))
    Path(files.temp_name(out)).write_bytes(b"half of an interrupted write")
    files.write_atomic(out, b"new\n", 0o600)
    assert out.read_bytes() == b"new\n" and out.stat().st_mode & 0o777 == 0o600
    assert not os.path.lexists(files.temp_name(out))


def test_a_link_below_a_tree_we_own_is_refused(tmp_path: Path, victim: Path) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "sub").symlink_to(victim.parent)
    with pytest.raises(files.LinkRefused):
        files.write_atomic(tmp_path / "tree" / "sub" / "victim", b"x", 0o644, under=tmp_path / "tree")
    with pytest.raises(files.LinkRefused):
        files.make_dirs(tmp_path / "tree" / "sub" / "deeper", under=tmp_path / "tree")
    untouched(victim)
    assert not (victim.parent / "deeper").exists()
    (tmp_path / "tree" / "log").symlink_to(victim)
    with pytest.raises(files.LinkRefused):
        files.append(tmp_path / "tree" / "log", b"appended\n")
    untouched(victim)


# ---- render ---------------------------------------------------------------------
def test_render_refuses_a_link_at_a_temp_name(ctm: Cli, tmp_path: Path, victim: Path) -> None:
    out = tmp_path / "out"
    ctm("render", str(out))
    conf = out / "rack-101" / "lxc" / "1005.config"
    conf.write_text(conf.read_text() + "# a hand edit: rendered again\n")
    edited = conf.read_bytes()
    (out / "rack-101" / "lxc" / ".1005.config.tmp").symlink_to(victim)
    err = refused(ctm("render", str(out), check=False))
    assert ".1005.config.tmp" in err and "symbolic link" in err
    untouched(victim)
    assert conf.read_bytes() == edited
    assert not list((out / "rack-101").rglob("*.tmp*"))[1:]  # only the planted one is left


def test_render_refuses_a_link_at_the_staging_name_of_a_new_rack(ctm: Cli, tmp_path: Path, victim: Path) -> None:
    scratch = tmp_path / "scratch"
    ctm("render", str(scratch))
    racks = sorted(p.name for p in scratch.iterdir() if p.name.startswith("rack-"))
    out = tmp_path / "out"
    out.mkdir()
    for rack in racks:
        (out / f".{rack}.new").symlink_to(victim.parent)
    err = refused(ctm("render", str(out), check=False))
    assert "staging" in err
    untouched(victim)
    assert sorted(os.listdir(victim.parent)) == ["victim"]
    assert all((out / f".{rack}.new").is_symlink() for rack in racks)  # left alone
    assert not any((out / rack).exists() for rack in racks)


def test_render_refuses_a_rack_folder_that_is_a_link(ctm: Cli, tmp_path: Path, victim: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "rack-101").symlink_to(victim.parent)
    refused(ctm("render", str(out), check=False))
    assert sorted(os.listdir(victim.parent)) == ["victim"]


# ---- dns bind-config: the TSIG key --------------------------------------------------
@pytest.mark.parametrize("name", [".tsig.key.tmp", "tsig.key", "named.conf"])
def test_bind_config_never_writes_the_key_through_a_link(ctm: Cli, tmp_path: Path, victim: Path, name: str) -> None:
    out = tmp_path / "bind"
    out.mkdir()
    (out / name).symlink_to(victim)
    err = refused(ctm("dns", "bind-config", str(out), check=False))
    assert "symbolic link" in err
    untouched(victim)
    assert sorted(os.listdir(out)) == [name]  # nothing written: not the key, not named.conf, not zones/


def test_single_file_configs_refuse_a_link_at_out(ctm: Cli, tmp_path: Path, victim: Path) -> None:
    link = tmp_path / "edge.conf"
    link.symlink_to(victim)
    refused(ctm("edge", "config", str(link), check=False))
    refused(ctm("socks", "config", str(link), "--external", "10.101.2.4", check=False))
    untouched(victim)


def test_peering_and_carbon_refuse_a_link_below_out(ctm: Cli, tmp_path: Path, victim: Path) -> None:
    out = tmp_path / "peer"
    out.mkdir()
    scratch = tmp_path / "scratch"
    ctm("peering", "config", str(scratch))
    border = sorted(p.name for p in scratch.iterdir() if p.is_dir())[0]
    (out / border).symlink_to(victim.parent)
    refused(ctm("peering", "config", str(out), check=False))
    assert sorted(os.listdir(victim.parent)) == ["victim"]
    carbon = tmp_path / "carbon"
    carbon.mkdir()
    (carbon / "carbon.conf").symlink_to(victim)
    refused(ctm("metrics", "carbon-config", str(carbon), "--rack", "rack-101", "--top", "10.100.0.20:2003",
                check=False))
    untouched(victim)


# ---- the agent: CT configs and the CT's /data ------------------------------------------
def _lxc(tmp_path: Path):  # type: ignore[no-untyped-def]
    from ctmanager.agent import config as agent_config
    from ctmanager.agent.drivers.base import Completed
    from ctmanager.agent.drivers.lxc import LxcDriver
    from ctmanager.operations import inventory
    from ctmanager.store import open_store, queries
    from ctmanager.wire import spec as specs

    store = open_store(tmp_path / "a.db", create=True)
    with store.transaction():
        dc = inventory.init(store, EXAMPLE)
    spec = specs.parse(json.dumps(specs.spec_for(queries.find_ct(store, "acme"), dc)), 1006)
    store.close()
    paths = replace(agent_config.DEFAULT_PATHS, config=str(tmp_path / "ctconf"), data=str(tmp_path / "data"))
    driver = LxcDriver(str(tmp_path / "lxc"), paths, lambda argv, timeout: Completed(tuple(argv), 0, "", ""))
    return driver, spec


@pytest.mark.parametrize("plant", ["ct-folder", "temp", "data-service", "data-collectd"])
def test_the_agent_never_writes_a_ct_file_through_a_link(tmp_path: Path, victim: Path, plant: str) -> None:
    from ctmanager.render import ctfiles

    driver, spec = _lxc(tmp_path)
    ct_dir = tmp_path / "lxc" / "1006"
    data = Path(ctfiles.data_dir(driver.paths, spec.ct))
    if plant == "ct-folder":
        (tmp_path / "lxc").mkdir()
        ct_dir.symlink_to(victim.parent)
    elif plant == "temp":
        ct_dir.mkdir(parents=True)
        (ct_dir / ".config.tmp").symlink_to(victim)
    else:  # the CT's root owns its /data: a link in it must not send the HN's root elsewhere
        data.mkdir(parents=True)
        (data / ("service" if plant == "data-service" else "sys_collectd")).symlink_to(victim.parent)
    with pytest.raises(files.LinkRefused):
        driver.create(spec)
    untouched(victim)
    assert sorted(os.listdir(victim.parent)) == ["victim"]


# ---- storage node: ctbackup, ctstorage ---------------------------------------------------
def _ctbackup_toml(tmp_path: Path, mode: int) -> Path:
    (tmp_path / "pass").write_text("pw\n")
    (tmp_path / "pass").chmod(mode)
    conf = tmp_path / "ctbackup.toml"
    conf.write_text(f'data = "{tmp_path / "data"}"\nnode = "storage-101-4"\nstate_dir = "{tmp_path / "state"}"\n'
                    f'[repository]\nlocation = "{tmp_path / "repo"}"\npassphrase_file = "{tmp_path / "pass"}"\n')
    return conf


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o660, 0o640])  # 0640: the group reads it too
def test_ctbackup_refuses_a_passphrase_others_may_read(tmp_path: Path, mode: int) -> None:
    conf = _ctbackup_toml(tmp_path, mode)
    p = subprocess.run([sys.executable, "-m", "ctmanager.backupnode.cli", "--config", str(conf), "status"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and len(p.stdout.splitlines()) == 1 and not p.stderr, (p.stdout, p.stderr)
    error = json.loads(p.stdout)["error"]
    assert "passphrase_file" in error and f"mode {mode:04o}" in error and "chmod 600" in error
    (tmp_path / "pass").chmod(0o600)
    from ctmanager.backupnode.config import load
    assert load(conf).repo.passphrase_file == str(tmp_path / "pass")


def test_ctbackup_state_files_and_the_hook_request_never_go_through_a_link(tmp_path: Path, victim: Path) -> None:
    from ctmanager.backupnode import hook
    from ctmanager.backupnode.catalogue import Catalogue
    from ctmanager.backupnode.watch import HOOK_DIR

    ct = tmp_path / "data" / "1005"
    ct.mkdir(parents=True)
    (ct / HOOK_DIR).symlink_to(victim.parent)  # the CT's root planted it
    assert hook.ask({1005: ct}, timeout=0.0, sleep=lambda s: None) == {1005: None}
    assert sorted(os.listdir(victim.parent)) == ["victim"]
    state = tmp_path / "state"
    state.mkdir()
    (state / "points.jsonl").symlink_to(victim)
    with pytest.raises(files.LinkRefused):
        Catalogue(state).record(_point())
    untouched(victim)


def _point():  # type: ignore[no-untyped-def]
    from ctmanager.backupnode.catalogue import Point
    return Point("storage-101-4-x", 1000.0, (1005,))


def test_ctstorage_seal_refuses_a_link_at_its_temp_name(tmp_path: Path, victim: Path) -> None:
    from ctmanager.storagenode import fence

    data = tmp_path / "data"
    data.mkdir()
    (data / ".1005.sealed.tmp").symlink_to(victim)
    with pytest.raises(files.LinkRefused):
        fence.seal(str(data), 1005, 7, 1000.0)
    untouched(victim)
    assert not os.path.lexists(data / "1005.sealed")


def test_ssh_keys_of_the_daemons_are_private(tmp_path: Path) -> None:
    from ctmanager.manager import config as mconfig
    from ctmanager.storagenode.cli import load as storage_load
    from tests.conftest import rack_key

    key = tmp_path / "id_ed25519"
    key.write_text("PRIVATE KEY\n")
    key.chmod(0o644)
    conf = tmp_path / "ctstorage.toml"
    conf.write_text(f'data = "{tmp_path}"\n[ssh]\nkey_file = "{key}"\n')
    with pytest.raises(InputError, match="ssh.key_file.*open to other users"):
        storage_load(conf)
    mconf = tmp_path / "manager.toml"
    mconf.write_text(f'rack = "rack-101"\nlisten = "10.0.0.1:7070"\nkey_file = "{rack_key(tmp_path)}"\n[ssh]\n'
                     f'key_file = "{key}"\nknown_hosts = "/kh"\n')
    with pytest.raises(InputError, match="ssh.key_file.*open to other users"):
        mconfig.load(mconf)
    key.chmod(0o600)
    assert storage_load(conf).key_file == str(key)


# ---- class 10: accepted configuration works later ------------------------------------------
def _tsig(tmp_path: Path, algorithm: str) -> Path:
    key = tmp_path / "tsig.key"
    key.write_text(f'key "ctmanager" {{\n\talgorithm {algorithm};\n\tsecret "c2VjcmV0c2VjcmV0c2VjcmV0";\n}};\n')
    key.chmod(0o600)
    return key


def test_dns_configure_refuses_a_tsig_algorithm_dnspython_cannot_sign_with(ctm: Cli, tmp_path: Path) -> None:
    key = _tsig(tmp_path, "hmac-foo")
    err = refused(ctm("dns", "configure", "--server", "127.0.0.1:53", "--key-file", str(key), check=False))
    assert "hmac-foo" in err and "hmac-sha256" in err
    assert "DNS server" not in ctm("dns", "diff").stdout  # nothing was stored: later edits still work
    from ctmanager.dnsroutes import publisher
    assert publisher.read_key(_tsig(tmp_path, "hmac-md5")).algorithm == "hmac-md5.sig-alg.reg.int"
    assert publisher.read_key(_tsig(tmp_path, "hmac-sha512")).algorithm == "hmac-sha512"


@pytest.mark.parametrize("argv", [
    ["render", "{out}"], ["dns", "bind-config", "{out}"], ["edge", "config", "{out}"],
    ["socks", "config", "{out}", "--external", "10.101.2.4"], ["peering", "config", "{out}"],
    ["metrics", "carbon-config", "{out}", "--rack", "rack-101", "--top", "10.100.0.20:2003"]])
@pytest.mark.parametrize("bad", ["a\nb", "x\x1b[31m", "r\u202eevil", "tab\there"])
def test_an_output_path_with_control_characters_is_refused(ctm: Cli, tmp_path: Path, argv: list[str],
                                                           bad: str) -> None:
    out = str(tmp_path / f"o-{bad}")
    err = refused(ctm(*[a.format(out=out) for a in argv], check=False))
    assert "control characters" in err
    assert [n for n in os.listdir(tmp_path) if not n.startswith("s.db")] == []  # nothing made


# ---- class 11: ctmailmap does not tell clients where the store is ---------------------------
def test_mailmap_400_does_not_name_the_store(tmp_path: Path) -> None:
    from ctmanager.proxies.mailmap import MailMap

    m = MailMap(tmp_path / "secret-place" / "missing.db")
    m.refresh()
    got = m.answer(b"get jira@myhost.example.net\n")
    assert got.startswith(b"400 store unavailable") and b"secret-place" not in got and b"missing" not in got
    assert m.error  # the reason is kept for the log
