"""Rendering: golden files, OpenVZ syntax, write-if-changed, all-or-nothing."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from ctmanager.errors import RenderError
from ctmanager.operations import inventory
from ctmanager.render.engine import Engine
from ctmanager.render.tree import render_tree
from ctmanager.store import open_store, queries

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
    inv = inventory.Inventory(store, queries.dc_template(store))
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
    from ctmanager.render import output, tree

    monkeypatch.setattr(output, "PARALLEL_MIN", 1)
    monkeypatch.setattr(tree, "CHECK_PARALLEL_MIN", 1)
    render_tree(store, tmp_path / "par", workers=2)
    render_tree(store, tmp_path / "ser", workers=1)
    par, ser = snapshot(tmp_path / "par"), snapshot(tmp_path / "ser")
    del par[tree.MANIFEST], ser[tree.MANIFEST]  # stats differ
    assert par == ser
    assert render_tree(store, tmp_path / "par", workers=2).rendered_units == 0


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root, hidden ones included (temp files, staged folders), with file contents."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


@pytest.mark.parametrize("workers", [1, 2])
def test_error_in_one_ct_leaves_folder_as_it_was(store, tmp_path: Path, monkeypatch, workers: int) -> None:
    """A failure that only one CT's data triggers, while another worker renders
    another rack fine: no file replaced, no temp file or staged folder left
    behind, whether the folders are new or exist."""
    from ctmanager.dc import manifest
    from ctmanager.render import output, tree

    inv = inventory.Inventory(store, queries.dc_template(store))
    with store.transaction():
        inv.install_rack(102, manifest.load(ROOT / "templates/dc/manifests/rack-102.toml", inv.dc), "test")
        inv.add_tenant("globex", 102, ("jira",), inv.dc.defaults)

    monkeypatch.setattr(output, "PARALLEL_MIN", 1)
    monkeypatch.setattr(tree, "CHECK_PARALLEL_MIN", 1)
    override = tmp_path / "tpl"
    shutil.copytree(ROOT / "templates", override)
    conf = override / "ct/lxc/config.j2"
    conf.write_text(conf.read_text() + "# {{ (1 // 0) if ct.hostname == 'initech' else '' }}\n")
    fresh = tmp_path / "fresh"
    with pytest.raises(RenderError, match=r"config\.j2:\d+: ZeroDivisionError"):
        render_tree(store, fresh, engine=Engine([override]), workers=workers)
    assert not fresh.exists() or snapshot(fresh) == {}
    out = tmp_path / "out"
    render_tree(store, out, workers=workers)
    before = snapshot(out)
    with pytest.raises(RenderError, match="ZeroDivisionError"):
        render_tree(store, out, engine=Engine([override]), workers=workers)
    assert snapshot(out) == before


def test_new_rack_folder_is_staged_and_a_leftover_stage_is_replaced(store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / ".rack-101.new" / "openvz").mkdir(parents=True)
    (out / ".rack-101.new" / "openvz" / "1005.conf").write_text("half-written by an interrupted run\n")
    report = render_tree(store, out)
    assert len(report.written) == 41
    assert not (out / ".rack-101.new").exists()
    assert (out / "rack-101/openvz/1005.conf").read_text().startswith("# CT 1005 ")


def test_a_damaged_or_tampered_manifest_costs_a_rerender_and_deletes_nothing_outside(store, tmp_path: Path) -> None:
    import json

    from ctmanager.render import tree

    out = tmp_path / "out"
    render_tree(store, out)
    victim = tmp_path / "victim.txt"
    victim.write_text("not ours\n")
    manifest = json.loads((out / tree.MANIFEST).read_text())
    manifest["units"]["ct/999999"] = "k\t../victim.txt\t1\t9"  # a unit that no longer exists, pointing outside
    manifest["units"]["ct/1005"] = "garbage"
    (out / tree.MANIFEST).write_text(json.dumps(manifest))
    report = render_tree(store, out)
    assert victim.exists() and report.removed == []
    assert report.rendered_units == 1 and report.written == []  # 1005 re-checked by content: identical
    assert render_tree(store, out).rendered_units == 0
