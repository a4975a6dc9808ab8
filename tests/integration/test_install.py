"""A plain (non-editable) `pip install .` into a fresh venv works, data included:
the installed commands find every data kind ctmanager reads at run time
(ctmanager.paths.KINDS: the templates, the collectd config and plugin repo) on
their search path (<venv>/share/ctmanager/...), far from the source tree, which
is deleted before anything runs. The lab itself is not brought up here (root
networking, minutes); every path it and the agent read is resolved instead, and
the lab's software-tree step (monitoring_sw, where issue 18 failed) runs for real."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace as View

import pytest

from ctmanager import paths
from tests.conftest import ROOT


def kind_files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> View:
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    skip = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "tmp*", "__pycache__", ".pytest_cache",
                                  ".hypothesis")
    # the main job's output folder lab/ at the top, not the ctmanager/lab package
    shutil.copytree(ROOT, src, ignore=lambda d, names: skip(d, names) | ({"lab"} if Path(d) == ROOT else set()))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(src)],
                         capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]
    shutil.rmtree(src)  # nothing may still point into the source tree
    work = tmp / "elsewhere"
    work.mkdir()
    # /usr/sbin: tsig-keygen (dns bind-config)
    env = {"PATH": f"{venv / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin", "CTMANAGER_STORE": str(work / "dc.db"),
           "HOME": str(tmp)}

    def run(tool: str, *a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(venv / "bin" / tool), *a], cwd=work, env=env, capture_output=True, text=True,
                              timeout=120)

    init = run("ctmanager", "init", "example")
    assert init.returncode == 0, init.stderr
    return View(venv=venv, work=work, run=run, init=init)


def test_non_editable_install_renders_the_example_dc(installed: View) -> None:
    run: Callable[..., subprocess.CompletedProcess[str]] = installed.run
    assert "share/ctmanager/templates/dc/example.toml" in installed.init.stdout
    render = run("ctmanager", "render", "out", "--json")
    assert render.returncode == 0, render.stderr
    assert len(json.loads(render.stdout)["written"]) == 41
    conf = (installed.work / "out/rack-101/openvz/1005.conf").read_text()
    assert (ROOT / "tests/golden/rack-101/openvz/1005.conf").read_text() == conf
    assert json.loads(run("ctmanager", "status", "--json").stdout)[5]["hostname"] == "myhost"


def test_non_editable_install_finds_every_data_kind(installed: View) -> None:
    venv, work, run = installed.venv, installed.work, installed.run
    share = (venv / "share" / "ctmanager").resolve()
    # every kind the helper knows (its own table: a kind added there is checked here too)
    probe = run("python", "-c", "import json, ctmanager, ctmanager.paths as p; print(json.dumps("
                "{'pkg': ctmanager.__file__, 'dirs': {k: str(p.data_dir(k)) for k in p.KINDS}}))")
    assert probe.returncode == 0, probe.stderr
    got = json.loads(probe.stdout)
    assert Path(got["pkg"]).resolve().is_relative_to(venv.resolve())
    assert set(got["dirs"]) == set(paths.KINDS)
    for kind, k in paths.KINDS.items():
        folder = Path(got["dirs"][kind]).resolve()
        assert folder == share / k.folder, kind
        assert kind_files(folder) == kind_files(ROOT / k.folder), f"{kind}: files not installed (setup.cfg)"

    # the lab's software tree (what `lab up` failed on): collectd's config and plugin repo, ctautolink
    sw = run("python", "-c", "import sys; from pathlib import Path; from ctmanager.lab.rack import monitoring_sw; "
             "monitoring_sw(Path(sys.argv[1]))", str(work / "sw"))
    assert sw.returncode == 0, sw.stderr
    assert kind_files(work / "sw" / "collectd") == kind_files(ROOT / paths.KINDS["collectd"].folder)
    assert (work / "sw/lib/python/ctmanager/monitoring/ctautolink.py").is_file()
    assert (work / "sw/lib/python/pyinotify.py").is_file()
    assert (work / "sw/bin/ctautolink").stat().st_mode & 0o111

    # the installed ctautolink against the installed plugin repo: a postgresql CT gets its plugins
    repo = share / paths.KINDS["collectd"].folder / "plugins" / "repo"
    (work / "service" / "postgresql").mkdir(parents=True)
    link = run("ctautolink", "--once", "--no-check", "--restart-cmd", "", "--repo", str(repo),
               "--services", str(work / "service"), "--conf", str(work / "conf"))
    assert link.returncode == 0, link.stderr
    tagged = sorted(f.name for f in (ROOT / "monitoring/collectd/plugins/repo").glob("*.conf")
                    if "#service_tag: postgresql" in f.read_text())
    assert tagged and sorted(p.name for p in (work / "conf").iterdir()) == tagged
    assert all(Path(p.readlink()).is_relative_to(repo) for p in (work / "conf").iterdir())

    # the cheap commands the lab's metrics CT and DNS server are set up with
    carbon = run("ctmanager", "metrics", "carbon-config", "carbon", "--rack", "rack-101", "--top", "127.0.0.1:2003")
    assert carbon.returncode == 0, carbon.stderr
    assert (work / "carbon" / "carbon.conf").is_file()
    bind = run("ctmanager", "dns", "bind-config", "bind")
    assert bind.returncode == 0, bind.stderr
    assert (work / "bind" / "named.conf").is_file()


def test_non_editable_install_moves_data_with_ctstorage(installed: View) -> None:
    """The installed ctstorage (a storage node's side of a tenant move), and a move's
    dry run against the installed manifests: a realm refusal and a plan."""
    run, work = installed.run, installed.work
    data = work / "export" / "data"
    (data / "1005").mkdir(parents=True)
    (data / "1005" / "f").write_bytes(b"x" * 1000)
    (work / "ctstorage.toml").write_text(f'data = "{data}"\n[ssh]\ncontrol_dir = "{work / "ssh"}"\n')
    info = run("ctstorage", "--config", str(work / "ctstorage.toml"), "info", "1005")
    assert info.returncode == 0, info.stdout + info.stderr
    assert json.loads(info.stdout) | {"free": 0, "total": 0} == {
        "ok": True, "ctid": 1005, "path": str(data / "1005"), "exists": True, "bytes": 1000, "files": 1,
        "free": 0, "total": 0}
    gone = run("ctstorage", "--config", str(work / "ctstorage.toml"), "remove", "1005")
    assert json.loads(gone.stdout)["removed"] is True and not (data / "1005").exists()
    share = installed.venv / "share" / "ctmanager" / "templates" / "dc" / "manifests"
    for rack in ("rack-102", "rack-201"):
        got = run("ctmanager", "rack", "install", rack, str(share / f"{rack}.toml"))
        assert got.returncode == 0, got.stderr
    refused = run("ctmanager", "tenant", "move", "initech", "--to", "rack-201", "--dry-run")
    assert refused.returncode == 2 and "pinned to realm 'eu-west'" in refused.stderr
    plan = run("ctmanager", "tenant", "move", "myhost", "--to", "rack-102", "--dry-run")
    assert plan.returncode == 0 and "storage-102-3" in plan.stdout, plan.stderr


def test_missing_data_is_a_one_line_error(installed: View) -> None:
    """An install that lost a data folder says which folders it searched, in one line."""
    folder = installed.venv / "share" / "ctmanager" / paths.KINDS["collectd"].folder
    aside = folder.with_name("collectd.aside")
    folder.rename(aside)
    try:
        p = installed.run("python", "-c", "import sys; from ctmanager.paths import data_dir\n"
                          "try: data_dir('collectd')\nexcept Exception as e: sys.exit(f'{type(e).__name__}: {e}')")
    finally:
        aside.rename(folder)
    err = p.stderr.strip()
    assert p.returncode == 1 and "\n" not in err and err.startswith("DataNotFound: no collectd config"), err
    assert str(folder) in err


def tour_commands() -> list[tuple[list[str], int, str]]:
    """README's "Tour (real output)": each `$ ctmanager …` line, the exit status it
    shows (`; echo "exit=$?"` and the `exit=N` line after; else 0), and its first
    output line."""
    import shlex

    text = (ROOT / "README.md").read_text()
    block = text.split("## Tour (real output)", 1)[1].split("```console", 1)[1].split("```", 1)[0]
    lines = block.strip("\n").splitlines()
    out: list[tuple[list[str], int, str]] = []
    for i, line in enumerate(lines):
        if not line.startswith("$ ctmanager "):
            continue
        command = line[2:].split(";", 1)[0]
        after = lines[i + 1:]
        shown = next((ln for ln in after if ln.startswith("exit=") or ln.startswith("$ ")), "")
        code = int(shown[5:]) if shown.startswith("exit=") and "echo" in line else 0
        out.append((shlex.split(command)[1:], code, after[0] if after else ""))
    return out


def test_the_readme_tour_runs_as_written_from_a_plain_install(installed: View) -> None:
    run: Callable[..., subprocess.CompletedProcess[str]] = installed.run
    commands = tour_commands()
    assert len(commands) >= 10 and ["rack", "install", "rack-102", "rack-102"] in [c for c, _, _ in commands]
    fresh = installed.work / "tour"
    fresh.mkdir()
    for argv, code, first in commands:
        argv = [a.replace("/tmp/tour", str(fresh)) for a in argv]
        got = run("ctmanager", "--store", str(fresh / "dc.db"), *argv)  # the tour's `export CTMANAGER_STORE`
        assert got.returncode == code, f"ctmanager {' '.join(argv)}: exit {got.returncode}: {got.stderr[-500:]}"
        said = (got.stdout or got.stderr).splitlines()
        assert said and said[0].split()[:1] == first.split()[:1], f"ctmanager {' '.join(argv)}: {said[:1]} vs {first}"
