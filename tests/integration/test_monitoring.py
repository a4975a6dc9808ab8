"""collectd and ctautolink for real: every shipped config through `collectd -T`,
and the autolinker end to end under a real svscan, restarting a real collectd
whose metrics arrive at a graphite plaintext listener."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from labrack import ROOT, wait_for

from ctmanager.monitoring.collectd import check

MON = ROOT / "monitoring" / "collectd"
REPO = MON / "plugins" / "repo"


@pytest.fixture(autouse=True)
def needs_collectd() -> None:
    missing = [t for t in ("collectd", "svscan", "svc") if not shutil.which(t) and not Path("/usr/sbin", t).exists()]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (bash scripts/setup.sh)")


def base_config(tmp: Path, port: int) -> Path:
    """The shipped cloud.conf, pointed at a temporary /data and a local carbon."""
    data = tmp / "data" / "sys_collectd"
    (data / "conf").mkdir(parents=True, exist_ok=True)
    (data / "identity.conf").write_text('Hostname "dc1.rack-101.myhost"\n')
    text = (MON / "cloud.conf").read_text().replace("/data/sys_collectd", str(data))
    text = text.replace('Host "metrics"', 'Host "127.0.0.1"').replace('Port "2003"', f'Port "{port}"')
    text = text.replace("Interval 10", "Interval 1")
    conf = tmp / "cloud.conf"
    conf.write_text(text)
    return conf


def distinct_ports(n: int) -> list[int]:
    from bindserver import free_port

    ports: set[int] = set()
    while len(ports) < n:  # two daemons must never be handed the same port
        ports.add(free_port())
    return sorted(ports)


def carbon_daemon(kind: str, conf_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([f"carbon-{kind}", f"--config={conf_dir / 'carbon.conf'}", "--debug",
                             f"--pidfile={conf_dir / kind}.pid", "start"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        p.wait(20)


def needs_carbon() -> None:
    if not shutil.which("carbon-cache") or not shutil.which("whisper-fetch"):
        pytest.skip("needs graphite-carbon (bash scripts/setup.sh)")


def test_every_shipped_plugin_and_the_base_config_pass_collectd(tmp_path: Path) -> None:
    assert check(base_config(tmp_path, 1)) == []
    for plugin in sorted(REPO.glob("*.conf")):
        conf = tmp_path / f"check-{plugin.name}"
        conf.write_text(f'FQDNLookup false\nInclude "{plugin}"\n')
        assert check(conf) == [], plugin.name


def test_a_broken_plugin_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text('#service_tag: httpd\nLoadPlugin processes\n<Plugin processes>\n  ProcessMatch "x"\n</Plugin>\n')
    conf = tmp_path / "c.conf"
    conf.write_text(f'Include "{bad}"\n')
    assert any("needs exactly two" in e for e in check(conf))


@pytest.fixture
def ct(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    """A CT's process tree, outside a CT: svscan on a service dir with sys_collectd
    and sys_autolink (ctautolink) as services; collectd writes to a real carbon-cache."""
    from ctmanager.dc.template import load
    from ctmanager.monitoring import carbon

    needs_carbon()
    ports = carbon.Ports(*distinct_ports(7))
    carbon.render(load(ROOT / "templates" / "dc" / "example.toml"), 101, tmp_path / "carbon", "127.0.0.1:1",
                  listen="127.0.0.1", ports=ports)
    cache = carbon_daemon("cache", tmp_path / "carbon")
    whisper = tmp_path / "carbon" / "storage" / "whisper" / "dc1" / "rack-101" / "myhost"
    conf = base_config(tmp_path, ports.cache_line)
    services = tmp_path / "data" / "service"
    services.mkdir(parents=True)
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo)
    (repo / "broken_httpd.conf").write_text('#service_tag: httpd\nLoadPlugin processes\n<Plugin processes>\n'
                                            '  ProcessMatch "x"\n</Plugin>\n')
    links = tmp_path / "data" / "sys_collectd" / "conf"
    # hostile members of the repo, each a config collectd would take: never linked all the same
    outside = tmp_path / "outside_httpd.conf"
    outside.write_text("#service_tag: httpd\nLoadPlugin uptime\n")
    os.symlink(outside, repo / "evil_httpd.conf")
    os.symlink(outside, links / "evil_httpd.conf")  # what an earlier ctautolink linked for it: removed
    (repo / "odd\nname_httpd.conf").write_text("#service_tag: httpd\nLoadPlugin uptime\n")
    os.mkfifo(repo / "fifo_httpd.conf")
    (repo / "dir_httpd.conf").mkdir()
    log = tmp_path / "autolink.log"
    for name, run in (
        ("sys_collectd", f"exec collectd -f -C {conf}"),
        ("sys_autolink", f"exec {sys.executable} -m ctmanager.monitoring.ctautolink --services {services} "
                         f"--repo {repo} --conf {links} --restart-cmd 'svc -t {services}/sys_collectd' "
                         f">>{log} 2>&1"),
    ):
        d = services / name
        d.mkdir()
        (d / "run").write_text(f"#!/bin/sh\ncd {ROOT}\n{run}\n")
        (d / "run").chmod(0o755)
    svscan = subprocess.Popen(["svscan", str(services)], start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for("collectd's metrics in carbon", lambda: (whisper / "load").is_dir(), timeout=60)
        yield services, whisper, log
    finally:
        stop([cache])
        for d in services.iterdir():
            if (d / "supervise").exists():
                subprocess.run(["svc", "-dx", str(d)], capture_output=True)
        os.killpg(svscan.pid, signal.SIGTERM)
        svscan.wait(10)


def test_a_new_service_gets_its_plugins_and_its_metrics_arrive(ct: tuple[Path, Path, Path]) -> None:
    services, whisper, log = ct
    links = services.parent / "sys_collectd" / "conf"
    httpd = services / ".httpd"  # made under a dot-name, then renamed into place, like a real deployment
    httpd.mkdir()
    (httpd / "run").write_text(f"#!/bin/sh\nexec {sys.executable} -m http.server 0 --bind 127.0.0.1\n")
    (httpd / "run").chmod(0o755)
    httpd.rename(services / "httpd")
    # exactly the shipped httpd plugins: not broken_httpd.conf (collectd rejects it), no hostile one
    tagged = sorted(f.name for f in REPO.glob("*.conf") if "#service_tag: httpd" in f.read_text())
    wait_for("the httpd plugins linked", lambda: sorted(os.listdir(links)) == tagged, timeout=30,
             describe=lambda: f"links: {sorted(os.listdir(links))}")
    repo = Path(os.readlink(links / "process_httpd.conf")).parent
    assert all(Path(os.readlink(links / n)) == repo / n for n in tagged)
    cloud = services.parent.parent / "cloud.conf"
    assert check(cloud) == []  # the config collectd runs with, links and all, through collectd -T
    # something in the way of a repair (a directory at the temp name) is left alone; the link is repaired
    (links / ".tail_apache.conf.ctautolink").mkdir()
    os.symlink(repo / "process_httpd.conf", links / "tail_apache.conf.new")
    os.replace(links / "tail_apache.conf.new", links / "tail_apache.conf")  # ours, wrong
    (services / ".poke").mkdir()  # any event in the services dir means a resync
    wait_for("tail_apache.conf repaired",
             lambda: os.readlink(links / "tail_apache.conf") == str(repo / "tail_apache.conf"), timeout=30)
    since = int(time.time())
    wait_for("the httpd process memory in carbon's whisper file",  # collectd -> carbon-cache -> whisper
             lambda: any(v > 0 for v in _values(whisper / "processes-httpd" / "ps_rss.wsp", since)), timeout=60)
    text = log.read_text()
    assert "broken_httpd.conf: collectd rejects it" in text and "Traceback" not in text
    for told in ("plugin evil_httpd.conf: a symlink", "plugin fifo_httpd.conf: a FIFO",
                 "plugin dir_httpd.conf: a directory", "plugin odd\\nname_httpd.conf: not a plugin name",
                 "conf dir: .tail_apache.conf.ctautolink is a directory", "unlinked evil_httpd.conf"):
        assert text.count(told) == 1, (told, text)
    assert all(line.isascii() and line.isprintable() for line in text.splitlines()), text
    # daemontools' way to remove a service: hide it (a dot-name), stop it, then delete it
    (services / "httpd").rename(services / ".httpd")
    # every httpd link goes (one pass unlinks them one by one: wait for all, not the first)
    wait_for("the httpd links removed", lambda: sorted(os.listdir(links)) == [".tail_apache.conf.ctautolink"],
             timeout=30, describe=lambda: f"links: {sorted(os.listdir(links))}")
    subprocess.run(["svc", "-dx", str(services / ".httpd")], check=True)
    wait_for("its supervise gone", lambda: subprocess.run(["svok", str(services / ".httpd")]).returncode != 0,
             timeout=30)


def test_the_rack_relay_splits_to_high_res_disk_and_to_summaries_in_the_top_store(tmp_path: Path) -> None:
    from ctmanager.dc.template import load
    from ctmanager.monitoring import carbon

    needs_carbon()
    dc = load(ROOT / "templates" / "dc" / "example.toml")
    picked = distinct_ports(14)
    rp, tp = carbon.Ports(*picked[:7]), carbon.Ports(*picked[7:])
    carbon.render(dc, 101, tmp_path / "rack", f"127.0.0.1:{tp.cache_line}", listen="127.0.0.1", ports=rp,
                  summary_every=2)
    carbon.render(dc, 101, tmp_path / "top", "127.0.0.1:1", listen="127.0.0.1", ports=tp)
    procs = []
    try:
        for daemon, where in (("cache", "top"), ("cache", "rack"), ("aggregator", "rack"), ("relay", "rack")):
            procs.append(carbon_daemon(daemon, tmp_path / where))
        sock = wait_for("the relay", lambda: _connect(rp.relay_line), timeout=30)
        now = int(time.time())
        sock.sendall(f"dc1.rack-101.a.load.load.shortterm 2 {now}\ndc1.rack-101.b.load.load.shortterm 4 {now}\n".encode())
        sock.close()
        rack_wsp = tmp_path / "rack" / "storage" / "whisper" / "dc1" / "rack-101"
        top_wsp = tmp_path / "top" / "storage" / "whisper" / "dc1" / "rack-101" / "summary" / "load" / "load"
        wait_for("the high-res files", lambda: all((rack_wsp / h / "load" / "load" / "shortterm.wsp").exists()
                                                   for h in "ab"), timeout=30)
        assert _values(rack_wsp / "a" / "load" / "load" / "shortterm.wsp", now) == [2.0]
        assert not (tmp_path / "top" / "storage" / "whisper" / "dc1" / "rack-101" / "a").exists()  # only summaries go north
        wait_for("the summary in the top store", lambda: _values(top_wsp / "shortterm.wsp", now) == [3.0], timeout=30)
    finally:
        stop(procs)


def _connect(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        return None


def _values(wsp: Path, since: int) -> list[float]:
    if not wsp.exists():
        return []
    out = subprocess.run(["whisper-fetch", f"--from={since - 120}", str(wsp)], capture_output=True, text=True).stdout
    return [float(v) for _, v in (line.split() for line in out.splitlines()) if v != "None"]
