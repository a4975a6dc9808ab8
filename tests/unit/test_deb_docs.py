"""What the package makes from the code (scripts/deb/docs.py) stays true: each
/etc/ctmanager/*.example is a config its daemon loads (with its files in place),
and every console script with subcommands gets a man page and completions."""

from __future__ import annotations

import gzip
import importlib.util
import re
from pathlib import Path
from types import ModuleType

from tests.conftest import ROOT


def _docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deb_docs", ROOT / "scripts" / "deb" / "docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _placed(text: str, tmp_path: Path) -> str:
    """The example with every /etc/ctmanager and /var/lib path under tmp_path, each file it names made."""
    text = text.replace("/etc/ctmanager/", f"{tmp_path}/etc/").replace("/var/lib/", f"{tmp_path}/var/")
    (tmp_path / "etc").mkdir(exist_ok=True)
    for path in re.findall(rf'"({re.escape(str(tmp_path))}/etc/[^"]+)"', text):
        p = Path(path)
        p.write_text("ab" * 32 + "\n")
        p.chmod(0o600)
    return text


def test_the_manager_example_is_a_config_the_manager_loads(tmp_path: Path) -> None:
    from ctmanager.manager import config

    text = _docs().example_block(config.__doc__ or "")
    path = tmp_path / "manager.toml"
    path.write_text(_placed(text, tmp_path))
    loaded = config.load(path)
    assert loaded.slot == 101 and loaded.name == "mgr-101-a" and loaded.agent_port == 7071


def test_the_ctbackup_example_is_a_config_ctbackup_loads(tmp_path: Path) -> None:
    from ctmanager.backupnode import config

    text = _docs().example_block(config.__doc__ or "")
    path = tmp_path / "ctbackup.toml"
    path.write_text(_placed(text, tmp_path))
    assert config.load(path).node == "storage-101-4"


def test_man_pages_and_completions_are_made_for_every_script_with_subcommands(tmp_path: Path) -> None:
    docs = _docs()
    assert docs.main(["docs.py", str(tmp_path)]) == 0
    for name in docs.PARSERS:
        page = gzip.decompress((tmp_path / f"usr/share/man/man1/{name}.1.gz").read_bytes()).decode()
        assert page.startswith(".TH") and "ctmanager manual" in page
        assert "complete" in (tmp_path / f"usr/share/bash-completion/completions/{name}").read_text()
    ctmanager_page = gzip.decompress((tmp_path / "usr/share/man/man1/ctmanager.1.gz").read_bytes()).decode()
    assert "tenant move" in ctmanager_page and "store copy" in ctmanager_page  # subcommands, not just the top
    assert (tmp_path / "etc/ctmanager/manager.toml.example").read_text().startswith("rack = ")
