"""Every console script says its version (`--version`), the same one: a rolling
upgrade is watched by it (hn list and manager status show the daemons')."""

from __future__ import annotations

import configparser
import importlib

import pytest

from ctmanager import __version__
from tests.conftest import ROOT


def scripts() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = [x.strip() for x in cfg["options.entry_points"]["console_scripts"].splitlines() if x.strip()]
    return dict(tuple(part.strip() for part in line.split("=", 1)) for line in lines)  # type: ignore[misc]


@pytest.mark.parametrize("name,target", sorted(scripts().items()))
def test_every_console_script_says_its_version(name: str, target: str, capsys: pytest.CaptureFixture[str]) -> None:
    module, func = target.split(":")
    with pytest.raises(SystemExit) as exit:
        getattr(importlib.import_module(module), func)(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.strip() == f"{name} {__version__}"
