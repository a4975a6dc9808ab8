"""Rendering: golden files, OpenVZ syntax, write-if-changed, all-or-nothing."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from ctmanager import inventory
from ctmanager.errors import RenderError
from ctmanager.render import Engine, render_tree
from ctmanager.store import open_store

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "templates" / "dc" / "example.toml"
GOLDEN = ROOT / "tests" / "golden"
# Files shown in full: a tenant core CT (1005 myhost), a pooled service CT, the exports.
GOLDEN_FILES = [
    "rack-101/openvz/1005.conf", "rack-101/openvz/1005.mount", "rack-101/openvz/1005.umount",
    "rack-101/lxc/1005.config", "rack-101/resolv/1005.conf",
    "rack-101/openvz/1001.conf", "rack-101/resolv/1001.conf", "rack-101/storage/storage-101-4.exports",
]
OPENVZ_KEYS = {"HOSTNAME", "IP_ADDRESS", "NAMESERVER", "SEARCHDOMAIN", "ONBOOT", "VE_ROOT", "VE_PRIVATE", "OSTEMPLATE",
               "VE_LAYOUT", "PHYSPAGES", "SWAPPAGES", "DISKSPACE", "DISKINODES", "CPUUNITS", "CPULIMIT", "CPUS"}
BARRIER_KEYS = {"PHYSPAGES", "SWAPPAGES", "DISKSPACE", "DISKINODES"}
NUM = r"\d+[KMG]?"


@pytest.fixture
def store(tmp_path: Path):
    s = open_store(tmp_path / "s.db", create=True)
    with s.transaction():
        inventory.init(s, EXAMPLE)
    yield s
    s.close()


def test_golden_files(store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    render_tree(store, out)
    for rel in GOLDEN_FILES:
        got = (out / rel).read_text()
        golden = GOLDEN / rel
        if os.environ.get("CTMANAGER_UPDATE_GOLDEN") == "1":
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(got)
        assert got == golden.read_text(), f"{rel} differs from tests/golden/{rel} (CTMANAGER_UPDATE_GOLDEN=1 to accept)"
    assert os.stat(out / "rack-101/openvz/1005.mount").st_mode & 0o777 == 0o755


def test_every_openvz_line_is_known_key_value_with_barrier_limit_syntax(store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    render_tree(store, out)
    confs = sorted((out / "rack-101" / "openvz").glob("*.conf"))
    assert len(confs) == 8
    for conf in confs:
        keys = []
        for line in conf.read_text().splitlines():
            if line.startswith("#") or not line:
                continue
            m = re.fullmatch(r'([A-Z_]+)="([^"\\$`\n]*|[^"\\`\n]*\$VEID)"', line)
            assert m, f"{conf.name}: not KEY=\"value\": {line!r}"
            key, value = m.groups()
            assert key in OPENVZ_KEYS, f"{conf.name}: unknown key {key}"
            if key in BARRIER_KEYS:
                assert re.fullmatch(f"{NUM}:{NUM}", value), f"{conf.name}: {key} is not barrier:limit: {value}"
            keys.append(key)
        assert len(keys) == len(set(keys))
        assert {"VE_ROOT", "VE_PRIVATE", "HOSTNAME", "IP_ADDRESS"} <= set(keys)
        assert '$VEID"' in conf.read_text().split("VE_PRIVATE=")[1].splitlines()[0]


def test_second_run_changes_nothing_and_a_hand_edit_is_restored(store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = render_tree(store, out)
    assert len(first.written) == 41
    mtime = os.stat(out / "rack-101/openvz/1005.conf").st_mtime_ns
    second = render_tree(store, out)
    assert second.written == [] and second.rendered_units == 0 and second.unchanged == 41
    assert os.stat(out / "rack-101/openvz/1005.conf").st_mtime_ns == mtime
    (out / "rack-101/lxc/1006.config").write_text("edited by hand\n")
    third = render_tree(store, out)
    assert third.written == ["rack-101/lxc/1006.config"]
    assert "lxc.uts.name = acme" in (out / "rack-101/lxc/1006.config").read_text()


def test_changes_rewrite_only_affected_files_and_remove_stale(store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    render_tree(store, out)
    (out / "rack-101" / "notes.txt").write_text("ops notes\n")  # not ours: never deleted
    inv = inventory.Inventory(store, inventory.queries.dc_template(store))
    with store.transaction():
        inv.set_ct("acme", resources=inv.dc.defaults.__class__(**{**inv.dc.defaults.__dict__, "memory": 6 << 30}))
        inv.rm_tenant("initech")
    diff = render_tree(store, out, diff=True)
    assert '-PHYSPAGES="0:4G"' in diff.diff and '+PHYSPAGES="0:6G"' in diff.diff
    assert "rack-101/openvz/1007.conf" in diff.removed
    assert (out / "rack-101/openvz/1007.conf").exists(), "--diff must not write"
    report = render_tree(store, out)
    assert sorted(report.written) == ["rack-101/lxc/1006.config", "rack-101/openvz/1006.conf",
                                      "rack-101/storage/storage-101-4.exports"]
    assert len(report.removed) == 5 and not (out / "rack-101/openvz/1007.conf").exists()
    assert (out / "rack-101" / "notes.txt").exists()


def test_template_error_writes_nothing(store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    render_tree(store, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    override = tmp_path / "tpl"
    shutil.copytree(ROOT / "templates", override)
    (override / "ct/lxc/config.j2").write_text("lxc.uts.name = {{ ct.hostname }}\nlxc.bogus = {{ ct.nonexistent }}\n")
    with pytest.raises(RenderError, match=r"config\.j2:2: .*nonexistent"):
        render_tree(store, out, engine=Engine([override]))
    (override / "ct/lxc/config.j2").write_text("{% if %}\n")
    with pytest.raises(RenderError, match=r"config\.j2:1: template syntax error"):
        render_tree(store, out, engine=Engine([override]))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_parallel_and_serial_render_agree(store, tmp_path: Path, monkeypatch) -> None:
    from ctmanager.render import tree

    monkeypatch.setattr(tree, "PARALLEL_MIN", 1)
    render_tree(store, tmp_path / "par", workers=2)
    render_tree(store, tmp_path / "ser", workers=1)
    for p in (tmp_path / "ser").rglob("*"):
        if p.is_file() and p.name != tree.MANIFEST:
            assert (tmp_path / "par" / p.relative_to(tmp_path / "ser")).read_bytes() == p.read_bytes()
