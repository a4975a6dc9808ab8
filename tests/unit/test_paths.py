"""The data-file search (ctmanager.paths) and that setup.cfg / MANIFEST.in ship every
file of every kind (tests/integration/test_install.py proves it on a real install)."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from ctmanager import paths
from ctmanager.errors import CtmError

ROOT = Path(__file__).resolve().parents[2]


def kind_files(folder: Path) -> set[str]:
    """Every file of a data folder, relative to it (what an install must carry)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")}


def data_files() -> dict[str, str]:
    """setup.cfg's [options.data_files], expanded: installed path (under <prefix>) -> source path."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    out: dict[str, str] = {}
    for target, globs in cfg["options.data_files"].items():
        for pattern in globs.split():
            for src in sorted(ROOT.glob(pattern.strip(","))):
                assert src.is_file(), f"setup.cfg data_files: {pattern} matches a folder ({src})"
                out[f"{target}/{src.name}"] = str(src.relative_to(ROOT))
    return out


@pytest.mark.parametrize("kind", sorted(paths.KINDS))
def test_setup_cfg_installs_every_file_of_every_kind(kind: str) -> None:
    folder = paths.KINDS[kind].folder
    want = {f"share/ctmanager/{folder}/{rel}": f"{folder}/{rel}" for rel in kind_files(ROOT / folder)}
    assert want, f"{folder} is empty in the checkout"
    got = {t: s for t, s in data_files().items() if s.startswith(f"{folder}/")}
    assert got == want  # a missing line (globs are not recursive) shows up here as a missing file


def test_manifest_grafts_every_kind() -> None:
    grafts = {ln.split(None, 1)[1].strip() for ln in (ROOT / "MANIFEST.in").read_text().splitlines()
              if ln.startswith("graft ")}
    for kind in paths.KINDS.values():
        parts = Path(kind.folder).parts
        assert any("/".join(parts[:i]) in grafts for i in range(1, len(parts) + 1)), kind.folder


def test_checkout_is_found_first() -> None:
    for kind, k in paths.KINDS.items():
        assert paths.data_dir(kind) == ROOT / k.folder
    assert paths.find_data("collectd", "cloud.conf") == ROOT / "monitoring/collectd/cloud.conf"
    assert paths.template_dirs()[0] == ROOT / "templates"


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No checkout (as in site-packages: no setup.cfg) and empty install prefixes."""
    fake = tmp_path / "site-packages"
    (fake / "templates").mkdir(parents=True)  # some other distribution's: must not be taken for ours
    (fake / "monitoring" / "collectd").mkdir(parents=True)
    monkeypatch.setattr(paths, "_CHECKOUT", fake)
    monkeypatch.setattr(paths.sysconfig, "get_path", lambda name: str(tmp_path / "prefix"))
    monkeypatch.setattr(paths.site, "getuserbase", lambda: str(tmp_path / "user"))
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    return tmp_path


def test_missing_data_is_one_line_naming_the_folders(nowhere: Path) -> None:
    if any(d.is_dir() for d in (Path("/usr/share/ctmanager"), Path("/usr/local/share/ctmanager"))):
        pytest.skip("ctmanager data installed system-wide here")
    with pytest.raises(paths.DataNotFound) as exc:
        paths.data_dir("collectd")
    msg = str(exc.value)
    assert isinstance(exc.value, CtmError) and exc.value.exit_code == 1 and "\n" not in msg
    assert str(nowhere / "prefix/share/ctmanager/monitoring/collectd") in msg
    assert "/usr/share/ctmanager/monitoring/collectd" in msg and "site-packages" not in msg
    with pytest.raises(paths.DataNotFound, match="no plugins/repo/x.conf"):
        paths.find_data("collectd", "plugins/repo/x.conf")
    assert paths.template_dirs() == []


def test_installed_prefix_and_env_override(nowhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    share = nowhere / "prefix/share/ctmanager"
    (share / "templates/dc").mkdir(parents=True)
    (share / "templates/dc/example.toml").write_text("")
    (share / "monitoring/collectd").mkdir(parents=True)
    assert paths.data_dir("collectd") == share / "monitoring/collectd"
    assert paths.find_dc_template("example") == share / "templates/dc/example.toml"
    site_dir = nowhere / "site"
    (site_dir / "dc").mkdir(parents=True)
    (site_dir / "dc/example.toml").write_text("")
    monkeypatch.setenv(paths.ENV_VAR, str(site_dir))
    assert paths.template_dirs() == [site_dir, share / "templates"]
    assert paths.find_dc_template("example") == site_dir / "dc/example.toml"
    assert paths.find_data("templates", "dc/example.toml") == site_dir / "dc/example.toml"


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        paths.data_dir("nope")
