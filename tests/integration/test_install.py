"""A plain (non-editable) `pip install .` into a fresh venv works, templates
included: the installed command finds the example DC and the CT templates on
its search path (<venv>/share/ctmanager/templates), far from the source tree."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_non_editable_install_renders_the_example_dc(tmp_path: Path) -> None:
    src = tmp_path / "src"
    skip = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "tmp*", "__pycache__", ".pytest_cache",
                                  ".hypothesis")
    # the main job's output folder lab/ at the top, not the ctmanager/lab package
    shutil.copytree(ROOT, src, ignore=lambda d, names: skip(d, names) | ({"lab"} if Path(d) == ROOT else set()))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(src)],
                         capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]
    shutil.rmtree(src)  # nothing may still point into the source tree
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "CTMANAGER_STORE": str(work / "dc.db"), "HOME": str(tmp_path)}
    run = lambda *a: subprocess.run([str(venv / "bin" / "ctmanager"), *a], cwd=work, env=env, capture_output=True,
                                    text=True, timeout=120)
    init = run("init", "example")
    assert init.returncode == 0, init.stderr
    assert "share/ctmanager/templates/dc/example.toml" in init.stdout
    render = run("render", "out", "--json")
    assert render.returncode == 0, render.stderr
    assert len(json.loads(render.stdout)["written"]) == 41
    conf = (work / "out/rack-101/openvz/1005.conf").read_text()
    assert (ROOT / "tests/golden/rack-101/openvz/1005.conf").read_text() == conf
    assert json.loads(run("status", "--json").stdout)[5]["hostname"] == "myhost"
